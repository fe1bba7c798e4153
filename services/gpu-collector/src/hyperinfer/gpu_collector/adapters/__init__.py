"""Real adapters of the collector's ports (NVML, engine HTTP clients), beside their fakes."""
