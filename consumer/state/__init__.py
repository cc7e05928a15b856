"""Per-customer attribution state: the pure records, their compact encoding, the store protocol
and its Redis (and in-memory) implementations, with the Redis scripts in lua/."""
