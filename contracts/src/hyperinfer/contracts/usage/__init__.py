"""usage contracts, one module per major version."""
