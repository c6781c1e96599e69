"""Leader election for cluster singletons, e.g. the presence sweeper (port + adapters)."""
