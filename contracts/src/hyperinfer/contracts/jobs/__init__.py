"""jobs contracts, one module per major version."""
