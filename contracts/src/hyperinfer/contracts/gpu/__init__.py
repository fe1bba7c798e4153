"""gpu contracts, one module per major version."""
