"""dlq contracts, one module per major version."""
