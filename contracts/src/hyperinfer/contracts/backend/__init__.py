"""backend contracts, one module per major version."""
