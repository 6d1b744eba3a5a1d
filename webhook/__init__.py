"""multihome: admission webhook and NetworkPolicy enricher for multi-homed Pods."""
