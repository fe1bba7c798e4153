"""HyperInfer quota: Budget periods, settlement and reconciliation, alerts, quota request/reply."""
