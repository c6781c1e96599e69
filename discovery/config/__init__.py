"""Dynamic configuration: declared settings changed at run time, seen by every node (port + adapters)."""
