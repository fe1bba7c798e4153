"""The real GPU source: NVML through ``nvidia-ml-py`` (``import pynvml``).

Every field is read on its own: a field the GPU or driver does not support
(``NVMLError_NotSupported``, ``NoPermission``, ``FunctionNotFound``, ...) is reported
absent. Only errors that mean the GPU itself is gone (lost, needs a reset, driver
unloaded) mark that GPU as a problem; the other GPUs of the node are still reported.
All calls block: the collector runs ``read`` through ``asyncio.to_thread``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import pynvml
from hyperinfer.contracts.gpu.v1 import GpuProcess, GpuSample
from hyperinfer.gpu_collector.errors import GpuReadFailed, GpuUnavailable
from hyperinfer.gpu_collector.ports import GpuReading, NvmlApi

log = logging.getLogger(__name__)
T = TypeVar("T")

PSTATE_UNKNOWN = 32
_GPU_GONE: tuple[type[Exception], ...] = (
    pynvml.NVMLError_GpuIsLost,
    pynvml.NVMLError_ResetRequired,
    pynvml.NVMLError_Uninitialized,
    pynvml.NVMLError_DriverNotLoaded,
    pynvml.NVMLError_LibRmVersionMismatch,
)


class GpuGone(Exception):
    """The GPU stopped answering while it was being read."""


class NvmlGpuSource:
    """``GpuSource`` over NVML; ``nvml`` is the ``pynvml`` module unless a fake is given."""

    def __init__(self, nvml: NvmlApi | None = None) -> None:
        self._nvml: Any = nvml if nvml is not None else pynvml
        self._initialised = False

    def open(self) -> None:
        if self._initialised:
            return
        try:
            self._nvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise GpuUnavailable(f"NVML unavailable: {exc}") from None
        self._initialised = True

    def close(self) -> None:
        if self._initialised:
            self._initialised = False
            try:
                self._nvml.nvmlShutdown()
            except pynvml.NVMLError as exc:
                log.debug("nvmlShutdown failed: %s", exc)

    def read(self) -> GpuReading:
        self.open()
        try:
            count = int(self._nvml.nvmlDeviceGetCount())
        except pynvml.NVMLError as exc:
            raise GpuReadFailed(f"NVML cannot count GPUs: {exc}") from None
        if count == 0:
            raise GpuUnavailable("NVML reports no GPU on this node")
        samples, problems = [], []
        for index in range(count):
            try:
                samples.append(self._sample(index))
            except GpuGone as exc:
                samples.append(GpuSample(index=index))
                problems.append(f"GPU {index}: {exc}")
        return GpuReading(
            driver_version=_text(self._field(self._nvml.nvmlSystemGetDriverVersion)),
            cuda_version=cuda_version(self._field(self._nvml.nvmlSystemGetCudaDriverVersion)),
            nvml_version=_text(self._field(self._nvml.nvmlSystemGetNVMLVersion)),
            gpus=samples,
            problems=problems,
        )

    def _sample(self, index: int) -> GpuSample:
        nvml = self._nvml
        handle = self._field(nvml.nvmlDeviceGetHandleByIndex, index, required=True)
        memory = self._field(nvml.nvmlDeviceGetMemoryInfo, handle)
        utilization = self._field(nvml.nvmlDeviceGetUtilizationRates, handle)
        return GpuSample(
            index=index,
            name=_text(self._field(nvml.nvmlDeviceGetName, handle)),
            uuid=_text(self._field(nvml.nvmlDeviceGetUUID, handle)),
            pci_bus_id=_text(_attr(self._field(nvml.nvmlDeviceGetPciInfo, handle), "busId")),
            memory_total_bytes=_attr(memory, "total"),
            memory_used_bytes=_attr(memory, "used"),
            memory_free_bytes=_attr(memory, "free"),
            utilization_gpu_pct=_attr(utilization, "gpu"),
            utilization_memory_pct=_attr(utilization, "memory"),
            temperature_c=self._field(
                nvml.nvmlDeviceGetTemperature, handle, pynvml.NVML_TEMPERATURE_GPU
            ),
            power_usage_w=_watts(self._field(nvml.nvmlDeviceGetPowerUsage, handle)),
            power_limit_w=_watts(self._field(nvml.nvmlDeviceGetEnforcedPowerLimit, handle)),
            clock_graphics_mhz=self._field(
                nvml.nvmlDeviceGetClockInfo, handle, pynvml.NVML_CLOCK_GRAPHICS
            ),
            clock_memory_mhz=self._field(
                nvml.nvmlDeviceGetClockInfo, handle, pynvml.NVML_CLOCK_MEM
            ),
            pstate=_pstate(self._field(nvml.nvmlDeviceGetPerformanceState, handle)),
            processes=self._processes(handle),
            ecc_errors_corrected=self._ecc(handle, pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED),
            ecc_errors_uncorrected=self._ecc(handle, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED),
            mig_mode=_mig_enabled(self._field(nvml.nvmlDeviceGetMigMode, handle)),
        )

    def _processes(self, handle: Any) -> list[GpuProcess] | None:
        compute = self._field(self._nvml.nvmlDeviceGetComputeRunningProcesses, handle)
        graphics = self._field(self._nvml.nvmlDeviceGetGraphicsRunningProcesses, handle)
        if compute is None and graphics is None:
            return None
        found = [(p, "compute") for p in compute or []] + [(p, "graphics") for p in graphics or []]
        return [
            GpuProcess(
                pid=int(proc.pid),
                used_memory_bytes=_attr(proc, "usedGpuMemory"),
                name=_text(self._field(self._nvml.nvmlSystemGetProcessName, int(proc.pid))),
                kind=kind,
            )
            for proc, kind in found
        ]

    def _ecc(self, handle: Any, error_type: int) -> int | None:
        return self._field(
            self._nvml.nvmlDeviceGetTotalEccErrors, handle, error_type, pynvml.NVML_VOLATILE_ECC
        )

    @staticmethod
    def _field(fn: Callable[..., T], *args: Any, required: bool = False) -> T | None:
        """``fn(*args)``, or None when NVML says the field is not available here."""
        try:
            return fn(*args)
        except _GPU_GONE as exc:
            raise GpuGone(str(exc)) from None
        except pynvml.NVMLError as exc:
            if required:
                raise GpuGone(str(exc)) from None
            return None


def cuda_version(raw: int | None) -> str | None:
    """NVML's integer CUDA driver version, ``12040`` → ``"12.4"``."""
    if raw is None or raw <= 0:
        return None
    return f"{raw // 1000}.{(raw % 1000) // 10}"


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").rstrip("\x00") or None
    return str(value) or None


def _attr(value: object, name: str) -> Any:
    return None if value is None else getattr(value, name, None)


def _watts(milliwatts: int | None) -> float | None:
    return None if milliwatts is None else milliwatts / 1000.0


def _pstate(value: int | None) -> int | None:
    return None if value is None or value == PSTATE_UNKNOWN else int(value)


def _mig_enabled(modes: list[int] | None) -> bool | None:
    return None if not modes else modes[0] == pynvml.NVML_DEVICE_MIG_ENABLE
