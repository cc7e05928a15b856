"""Per-customer attribution state: the pure data model, its compact encoding, and the Redis store."""
