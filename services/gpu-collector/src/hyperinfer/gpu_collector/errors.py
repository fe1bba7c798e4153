"""gpu-collector errors. None of them stops the service: each becomes a reported state.

GpuCollectorError
 ├── GpuUnavailable     no NVML library, no driver or no GPU: the node reports ``no_gpu``
 ├── GpuReadFailed      NVML initialised but a poll failed as a whole: ``status='error'``
 └── ScrapeFailed       an engine could not be scraped: the backend is ``healthy=false``
"""

from __future__ import annotations


class GpuCollectorError(Exception):
    """``str(exc)`` is one line suitable for ``detail`` fields and logs."""


class GpuUnavailable(GpuCollectorError):
    pass


class GpuReadFailed(GpuCollectorError):
    pass


class ScrapeFailed(GpuCollectorError):
    pass
