"""Real adapters (PostgreSQL, Redis, NATS) beside their in-memory fakes."""
