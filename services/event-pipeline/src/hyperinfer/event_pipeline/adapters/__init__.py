"""Real adapters of the pipeline's ports, beside their fakes."""
