"""Print one collected GpuMetricsReported as JSON (run on a GPU machine to prove NVML).

    uv run python services/gpu-collector/scripts/nvml_probe.py [--node NAME]

Same as ``python -m hyperinfer.gpu_collector.probe``; see that module for exit codes.
"""

from __future__ import annotations

import sys

from hyperinfer.gpu_collector.probe import main

if __name__ == "__main__":
    sys.exit(main())
