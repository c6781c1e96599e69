"""Cross-node pub/sub of encoded events (port + adapters)."""
