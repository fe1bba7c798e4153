"""A fake NVML library: the ``pynvml`` functions ``NvmlGpuSource`` calls, over simulated GPUs.

It raises ``pynvml``'s own error classes, so the real mapping code (per-field
``NotSupported`` → absent, lost GPUs, missing library) is what the tests exercise::

    gpu = FakeGpu(utilization_gpu=80, unsupported={"ecc", "mig"})
    source = NvmlGpuSource(FakeNvml([gpu]))

``FakeNvml(library_present=False)`` behaves like this GPU-less machine:
``nvmlInit`` raises ``NVMLError_LibraryNotFound``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml

GIB = 1024**3
FIELDS = frozenset(
    {
        "name",
        "uuid",
        "pci",
        "memory",
        "utilization",
        "temperature",
        "power",
        "power_limit",
        "clocks",
        "pstate",
        "compute_processes",
        "graphics_processes",
        "process_name",
        "ecc",
        "mig",
    }
)


@dataclass
class FakeProcess:
    pid: int
    used_memory_bytes: int | None = None
    name: str = "python"


@dataclass
class FakeGpu:
    """One simulated GPU; ``unsupported`` names fields (see ``FIELDS``) that raise NotSupported."""

    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    pci_bus_id: str = "00000000:01:00.0"
    memory_total: int = 80 * GIB
    memory_used: int = 4 * GIB
    utilization_gpu: int = 0
    utilization_memory: int = 0
    temperature_c: int = 35
    power_mw: int = 70_000
    power_limit_mw: int = 700_000
    clock_graphics_mhz: int = 1980
    clock_memory_mhz: int = 2619
    pstate: int = 0
    compute_processes: list[FakeProcess] = field(default_factory=list)
    graphics_processes: list[FakeProcess] = field(default_factory=list)
    ecc_corrected: int = 0
    ecc_uncorrected: int = 0
    mig_current: int = 0
    mig_pending: int = 0
    unsupported: set[str] = field(default_factory=set)
    lost: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.unsupported) - FIELDS
        if unknown:
            raise ValueError(f"unknown fake GPU fields: {sorted(unknown)}")


class FakeNvml:
    """Implements ``ports.NvmlApi`` over ``FakeGpu`` objects (handles are the GPUs)."""

    def __init__(
        self,
        gpus: list[FakeGpu] | None = None,
        *,
        library_present: bool = True,
        driver_version: str = "550.54.15",
        cuda_version: int = 12040,
        nvml_version: str = "12.550.54.15",
    ) -> None:
        self.gpus = gpus if gpus is not None else [FakeGpu()]
        self.library_present = library_present
        self.driver_version = driver_version
        self.cuda_version = cuda_version
        self.nvml_version = nvml_version
        self.initialised = False
        self.init_calls = 0

    # --- system ---
    def nvmlInit(self) -> None:
        self.init_calls += 1
        if not self.library_present:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self._require_init()
        self.initialised = False

    def nvmlSystemGetDriverVersion(self) -> str:
        self._require_init()
        return self.driver_version

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._require_init()
        return self.cuda_version

    def nvmlSystemGetNVMLVersion(self) -> bytes:
        self._require_init()
        return self.nvml_version.encode()  # the real binding returns bytes here

    def nvmlSystemGetProcessName(self, pid: int) -> str:
        self._require_init()
        for gpu in self.gpus:
            for proc in [*gpu.compute_processes, *gpu.graphics_processes]:
                if proc.pid == pid:
                    _check(gpu, "process_name")
                    return proc.name
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)

    # --- devices ---
    def nvmlDeviceGetCount(self) -> int:
        self._require_init()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        self._require_init()
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return _reachable(self.gpus[index])

    def nvmlDeviceGetName(self, gpu: FakeGpu) -> str:
        return _check(gpu, "name").name

    def nvmlDeviceGetUUID(self, gpu: FakeGpu) -> str:
        return _check(gpu, "uuid").uuid

    def nvmlDeviceGetPciInfo(self, gpu: FakeGpu) -> Any:
        return SimpleNamespace(busId=_check(gpu, "pci").pci_bus_id.encode())

    def nvmlDeviceGetMemoryInfo(self, gpu: FakeGpu) -> Any:
        _check(gpu, "memory")
        free = gpu.memory_total - gpu.memory_used
        return SimpleNamespace(total=gpu.memory_total, used=gpu.memory_used, free=free)

    def nvmlDeviceGetUtilizationRates(self, gpu: FakeGpu) -> Any:
        _check(gpu, "utilization")
        return SimpleNamespace(gpu=gpu.utilization_gpu, memory=gpu.utilization_memory)

    def nvmlDeviceGetTemperature(self, gpu: FakeGpu, sensor: int) -> int:
        return _check(gpu, "temperature").temperature_c

    def nvmlDeviceGetPowerUsage(self, gpu: FakeGpu) -> int:
        return _check(gpu, "power").power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, gpu: FakeGpu) -> int:
        return _check(gpu, "power_limit").power_limit_mw

    def nvmlDeviceGetClockInfo(self, gpu: FakeGpu, clock: int) -> int:
        _check(gpu, "clocks")
        return (
            gpu.clock_graphics_mhz if clock == pynvml.NVML_CLOCK_GRAPHICS else gpu.clock_memory_mhz
        )

    def nvmlDeviceGetPerformanceState(self, gpu: FakeGpu) -> int:
        return _check(gpu, "pstate").pstate

    def nvmlDeviceGetComputeRunningProcesses(self, gpu: FakeGpu) -> list[Any]:
        return _procs(_check(gpu, "compute_processes").compute_processes)

    def nvmlDeviceGetGraphicsRunningProcesses(self, gpu: FakeGpu) -> list[Any]:
        return _procs(_check(gpu, "graphics_processes").graphics_processes)

    def nvmlDeviceGetTotalEccErrors(self, gpu: FakeGpu, error_type: int, counter: int) -> int:
        _check(gpu, "ecc")
        corrected = error_type == pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED
        return gpu.ecc_corrected if corrected else gpu.ecc_uncorrected

    def nvmlDeviceGetMigMode(self, gpu: FakeGpu) -> list[int]:
        _check(gpu, "mig")
        return [gpu.mig_current, gpu.mig_pending]

    def _require_init(self) -> None:
        if not self.initialised:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)


def _reachable(gpu: FakeGpu) -> FakeGpu:
    if gpu.lost:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
    return gpu


def _check(gpu: FakeGpu, name: str) -> FakeGpu:
    _reachable(gpu)
    if name in gpu.unsupported:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
    return gpu


def _procs(processes: list[FakeProcess]) -> list[Any]:
    return [SimpleNamespace(pid=p.pid, usedGpuMemory=p.used_memory_bytes) for p in processes]


class DemoNvml(FakeNvml):
    """Fake GPUs whose utilization and memory drift slowly, for demos on GPU-less hosts."""

    def __init__(self, count: int) -> None:
        gpus = [
            FakeGpu(uuid=f"GPU-fake-{i:04d}", pci_bus_id=f"00000000:{i + 1:02x}:00.0")
            for i in range(count)
        ]
        super().__init__(gpus, driver_version="fake", nvml_version="fake")

    def nvmlDeviceGetCount(self) -> int:
        wave = time.time() / 60.0
        for i, gpu in enumerate(self.gpus):
            level = 0.5 + 0.4 * math.sin(wave + i)
            gpu.utilization_gpu = round(100 * level)
            gpu.utilization_memory = round(60 * level)
            gpu.memory_used = int(gpu.memory_total * (0.2 + 0.6 * level))
        return super().nvmlDeviceGetCount()
