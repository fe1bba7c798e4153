"""routing contracts, one module per major version."""
