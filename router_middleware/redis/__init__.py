"""State shared across replicas on Redis."""
