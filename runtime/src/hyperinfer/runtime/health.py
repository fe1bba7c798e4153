"""Liveness, readiness and diagnostics.

Each dependency registers a ``DependencyCheck``; ``/health/ready`` answers 503 naming
every failing one, and 200 again as soon as they recover — no restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Gauge

CheckFn = Callable[[], Awaitable[None]]
DetailFn = Callable[[], Awaitable[dict[str, Any]] | dict[str, Any]]


@dataclass(frozen=True)
class DependencyCheck:
    """A named probe that raises when the dependency is not usable."""

    name: str
    probe: CheckFn
    timeout_s: float = 1.0


@dataclass
class Health:
    """The health registry of one service process."""

    service: str
    version: str = "0.1.0"
    checks: list[DependencyCheck] = field(default_factory=list)
    details: dict[str, DetailFn] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)

    def add_check(self, check: DependencyCheck) -> None:
        self.checks.append(check)

    def add_detail(self, name: str, fn: DetailFn) -> None:
        """Add a section to ``/health/detailed`` (config version, queue depths, ...)."""
        self.details[name] = fn

    async def readiness(self) -> dict[str, str]:
        """``{dependency: "ok" | "<error>"}`` for every check, run concurrently."""
        results = await asyncio.gather(*(self._run(c) for c in self.checks))
        return dict(zip((c.name for c in self.checks), results, strict=True))

    async def detailed(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "service": self.service,
            "version": self.version,
            "uptime_s": round(time.time() - self.started_at, 3),
            "dependencies": await self.readiness(),
        }
        for name, fn in self.details.items():
            report[name] = await _maybe_await(fn())
        return report

    @staticmethod
    async def _run(check: DependencyCheck) -> str:
        try:
            await asyncio.wait_for(check.probe(), check.timeout_s)
        except TimeoutError:
            return "timeout"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"[:200] or "error"
        return "ok"


async def _maybe_await(value: Any) -> Any:
    if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
        return await value
    return value


class VersionedSource(Protocol):
    """A local copy of a pushed document (config snapshot, routing table)."""

    @property
    def version(self) -> int: ...

    def status(self) -> dict[str, Any]: ...


def expose_version(
    health: Health, registry: CollectorRegistry, name: str, source: VersionedSource
) -> None:
    """Report ``source``'s applied version in ``/health/detailed`` and as a gauge."""
    health.add_detail(name, source.status)
    gauge = Gauge(
        f"hyperinfer_{name}_version_applied",
        f"the {name} version this node applies",
        registry=registry,
    )
    gauge.set_function(lambda: source.version)
