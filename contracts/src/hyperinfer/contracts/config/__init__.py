"""config contracts, one module per major version."""
