"""HyperInfer router: Backend scoring, health and ejection; publishes the routing table."""
