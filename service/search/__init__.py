"""Vector search: the index is derived from the registry and can always be rebuilt."""
