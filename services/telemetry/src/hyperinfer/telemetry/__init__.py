"""HyperInfer telemetry: Usage and cost ledger from Redis Streams into PostgreSQL, spend API."""
