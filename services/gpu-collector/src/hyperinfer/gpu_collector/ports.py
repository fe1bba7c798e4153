"""What the collector needs from the outside world, as Protocols.

- ``GpuSource``: one blocking poll of the node's GPUs (real: NVML; fake: simulated GPUs).
  Called through ``asyncio.to_thread``, never on the event loop.
- ``NvmlApi``: the subset of ``pynvml`` the NVML source calls. The real module satisfies
  it; ``adapters.fake_nvml.FakeNvml`` implements it with simulated GPUs and raises pynvml's
  own error classes, so the same mapping code runs in tests and on a GPU machine.
- ``EngineClient``: fetches what an engine exposes (metrics text, health, readiness).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from hyperinfer.contracts.gpu.v1 import GpuSample
from hyperinfer.gpu_collector.engines import ScrapeTarget


@dataclass(frozen=True)
class GpuReading:
    """One successful poll: system versions plus one sample per GPU."""

    driver_version: str | None = None
    cuda_version: str | None = None
    nvml_version: str | None = None
    gpus: list[GpuSample] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class GpuSource(Protocol):
    def open(self) -> None:
        """Initialise; raise ``GpuUnavailable`` when there is no library, driver or GPU."""

    def read(self) -> GpuReading:
        """Poll every GPU; raise ``GpuUnavailable`` or ``GpuReadFailed``."""

    def close(self) -> None: ...


class NvmlApi(Protocol):
    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlSystemGetDriverVersion(self) -> str | bytes: ...
    def nvmlSystemGetCudaDriverVersion(self) -> int: ...
    def nvmlSystemGetNVMLVersion(self) -> str | bytes: ...
    def nvmlSystemGetProcessName(self, pid: int) -> str | bytes: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...
    def nvmlDeviceGetName(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetUUID(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetPciInfo(self, handle: Any) -> Any: ...
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any: ...
    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any: ...
    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int: ...
    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int: ...
    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int: ...
    def nvmlDeviceGetClockInfo(self, handle: Any, clock: int) -> int: ...
    def nvmlDeviceGetPerformanceState(self, handle: Any) -> int: ...
    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]: ...
    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: Any) -> list[Any]: ...
    def nvmlDeviceGetTotalEccErrors(self, handle: Any, error_type: int, counter: int) -> int: ...
    def nvmlDeviceGetMigMode(self, handle: Any) -> list[int]: ...


@dataclass(frozen=True)
class VllmObservation:
    """What one vLLM scrape saw: the metrics text and the ``/health`` status code."""

    metrics_text: str
    health_status: int | None


@dataclass(frozen=True)
class TritonObservation:
    """Triton's live/ready flags, readiness per configured model, and its metrics text."""

    live: bool
    ready: bool
    model_ready: dict[str, bool]
    metrics_text: str | None
    metrics_error: str | None = None


class EngineClient(Protocol):
    async def fetch_vllm(self, target: ScrapeTarget) -> VllmObservation:
        """Raise ``ScrapeFailed`` (one clear line) when the engine cannot be scraped."""

    async def fetch_triton(self, target: ScrapeTarget) -> TritonObservation:
        """Raise ``ScrapeFailed`` when the server cannot be reached at all."""

    async def forget(self, keep: set[str]) -> None:
        """Drop per-engine clients of engines (by ``base_url``) no longer scraped."""

    async def close(self) -> None: ...
