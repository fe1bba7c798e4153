"""Provider adapters, one per ``BackendConfig.kind``, and the registry that holds them.

``ProviderRegistry.get(kind)`` builds a provider the first time its kind is used (so a
node with no Triton backend never imports ``tritonclient``) and keeps it: one provider
instance, hence one pooled HTTP client, per kind and process.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Mapping

from hyperinfer.client.errors import UpstreamError
from hyperinfer.client.providers.base import PoolLimits, Provider, Upstream

PROVIDER_CLASSES: Mapping[str, str] = {
    "openai": "hyperinfer.client.providers.openai:OpenAIProvider",
    "openai_compatible": "hyperinfer.client.providers.openai:OpenAICompatibleProvider",
    "anthropic": "hyperinfer.client.providers.anthropic:AnthropicProvider",
    "echo": "hyperinfer.client.providers.echo:EchoProvider",
    "gemini": "hyperinfer.client.providers.gemini:GeminiProvider",
    "triton": "hyperinfer.client.providers.triton:TritonProvider",
}
"""kind → ``module:Class``; each class is built as ``Class(limits: PoolLimits)``."""


class ProviderUnavailable(UpstreamError):
    """No adapter for a backend's kind in this process (not installed, or failed to load)."""

    code = "provider_unavailable"


class ProviderRegistry:
    """kind → provider instance, built lazily, closed together."""

    def __init__(
        self,
        limits: PoolLimits | None = None,
        classes: Mapping[str, str] | None = None,
    ) -> None:
        self.limits = limits or PoolLimits()
        self._classes = dict(PROVIDER_CLASSES if classes is None else classes)
        self._providers: dict[str, Provider] = {}

    def register(self, provider: Provider) -> None:
        """Use ``provider`` for its kind (replaces a lazily built one; tests, custom kinds)."""
        self._providers[provider.kind] = provider

    def get(self, kind: str) -> Provider:
        provider = self._providers.get(kind)
        if provider is None:
            provider = self._providers[kind] = self._build(kind)
        return provider

    def _build(self, kind: str) -> Provider:
        target = self._classes.get(kind)
        if target is None:
            raise ProviderUnavailable(f"no provider adapter for backend kind {kind!r}")
        module_name, _, class_name = target.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            raise ProviderUnavailable(
                f"provider adapter for backend kind {kind!r} cannot be loaded: {exc}"
            ) from None
        provider: Provider = cls(self.limits)
        return provider

    @property
    def kinds_loaded(self) -> list[str]:
        return sorted(self._providers)

    async def aclose(self) -> None:
        providers, self._providers = list(self._providers.values()), {}
        await asyncio.gather(*(p.aclose() for p in providers), return_exceptions=True)


__all__ = [
    "PROVIDER_CLASSES",
    "PoolLimits",
    "Provider",
    "ProviderRegistry",
    "ProviderUnavailable",
    "Upstream",
]
