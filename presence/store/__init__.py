"""Where presence state lives (port + adapters)."""
