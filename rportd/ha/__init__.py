"""High availability: a primary, read-only secondaries, replication, no active-active."""
