"""Durable storage of channels, members, messages and read positions (port + adapters)."""
