"""Core contracts: protocols, configuration, registry, device manager, losses."""
