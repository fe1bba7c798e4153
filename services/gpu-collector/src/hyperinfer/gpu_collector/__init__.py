"""HyperInfer gpu-collector: NVML and engine metrics per node, published on NATS."""
