"""HyperInfer config: Governance data, admin API, versioned config snapshot pushed to every node."""
