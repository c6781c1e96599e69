"""Live chat nodes of the cluster (port + adapters)."""
