"""hyperinfer.client: the data-plane library and thick client."""

__all__: list[str] = []
