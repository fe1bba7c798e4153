"""Subjects → handlers: engine and GPU state, telemetry rollups, resolve requests.

State messages only update ``RouterState`` (a backend ejected or readmitted wakes the
publisher at once); ``hyperinfer.router.v1.resolve`` is answered from the current table,
in the ``router`` queue group so replicas share the requests.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, TypeVar

from hyperinfer.contracts import Envelope, names
from hyperinfer.contracts.backend.v1 import BackendStateReported
from hyperinfer.contracts.gpu.v1 import GpuMetricsReported
from hyperinfer.contracts.routing.v1 import ResolveRoute, RouteResolution
from hyperinfer.contracts.usage.v1 import UsageRollup
from hyperinfer.router import handlers
from hyperinfer.router.publisher import TablePublisher
from hyperinfer.router.state import RouterState
from hyperinfer.runtime.bus import Bus
from pydantic import BaseModel

ModelT = TypeVar("ModelT", bound=BaseModel)


class WrongMessageType(TypeError):
    """A valid envelope of another type arrived on a subject (logged by the bus)."""


def payload(env: Envelope[Any], model: type[ModelT]) -> ModelT:
    if not isinstance(env.data, model):
        raise WrongMessageType(f"expected {model.__name__}, got {env.type}")
    return env.data


async def subscribe(
    bus: Bus,
    state: RouterState,
    publisher: TablePublisher,
    clock: Callable[[], float],
    rng: random.Random,
) -> None:
    async def on_backend_state(env: Envelope[Any]) -> None:
        if state.record_backend(payload(env, BackendStateReported), clock()):
            publisher.wake.set()

    async def on_gpu_metrics(env: Envelope[Any]) -> None:
        state.record_gpu(payload(env, GpuMetricsReported), clock())

    async def on_rollup(env: Envelope[Any]) -> None:
        state.record_rollup(payload(env, UsageRollup), clock())

    async def on_resolve(env: Envelope[Any]) -> RouteResolution:
        return handlers.resolve(payload(env, ResolveRoute), publisher.table, rng)

    await bus.subscribe(names.BACKEND_STATE_PREFIX + ".*", on_backend_state)
    await bus.subscribe(names.GPU_METRICS_PREFIX + ".*", on_gpu_metrics)
    await bus.subscribe(names.USAGE_ROLLUP, on_rollup)
    await bus.subscribe(names.ROUTER_RESOLVE, on_resolve, queue="router", concurrency=8)
