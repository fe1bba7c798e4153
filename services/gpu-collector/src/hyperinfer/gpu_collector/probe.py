"""Print one NVML poll of this machine as a ``GpuMetricsReported`` JSON document.

    python -m hyperinfer.gpu_collector.probe [--node NAME] [--fake N]

Needs no NATS, Redis or config: it is the proof that the real NVML path works on a GPU
machine. Exit status 0 when at least one GPU was read, 3 on ``no_gpu``, 4 on ``error``.
"""

from __future__ import annotations

import argparse
import socket
import sys

from hyperinfer.gpu_collector.adapters.fake_nvml import DemoNvml
from hyperinfer.gpu_collector.adapters.nvml import NvmlGpuSource
from hyperinfer.gpu_collector.handlers import collect_gpu_report

EXIT_CODES = {"ok": 0, "no_gpu": 3, "error": 4}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hyperinfer.gpu_collector.probe")
    parser.add_argument("--node", default=socket.gethostname(), help="node name to report")
    parser.add_argument("--fake", type=int, metavar="N", help="simulate N GPUs instead of NVML")
    args = parser.parse_args(argv)
    source = NvmlGpuSource(DemoNvml(args.fake) if args.fake else None)
    try:
        report = collect_gpu_report(source, args.node, interval_s=1.0)
    finally:
        source.close()
    sys.stdout.write(report.model_dump_json(indent=2, exclude_none=False) + "\n")
    return EXIT_CODES[report.status]


if __name__ == "__main__":
    sys.exit(main())
