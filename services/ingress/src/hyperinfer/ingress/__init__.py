"""HyperInfer ingress: OpenAI- and Anthropic-compatible HTTP face over the data-plane library."""
