"""quota contracts, one module per major version."""
