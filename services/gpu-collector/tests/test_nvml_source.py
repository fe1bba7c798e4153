"""The NVML source maps pynvml calls to GpuSample: every field, absent when unsupported."""

from __future__ import annotations

import pynvml
import pytest
from hyperinfer.contracts import decode_envelope
from hyperinfer.contracts.envelope import Envelope
from hyperinfer.contracts.gpu.v1 import EVENT_METRICS, GpuMetricsReported
from hyperinfer.gpu_collector.adapters.fake_nvml import (
    FIELDS,
    GIB,
    FakeGpu,
    FakeNvml,
    FakeProcess,
)
from hyperinfer.gpu_collector.adapters.nvml import NvmlGpuSource, cuda_version
from hyperinfer.gpu_collector.errors import GpuReadFailed, GpuUnavailable
from hyperinfer.gpu_collector.handlers import collect_gpu_report

OPTIONAL_FIELDS = [
    "name",
    "uuid",
    "pci_bus_id",
    "memory_total_bytes",
    "memory_used_bytes",
    "memory_free_bytes",
    "utilization_gpu_pct",
    "utilization_memory_pct",
    "temperature_c",
    "power_usage_w",
    "power_limit_w",
    "clock_graphics_mhz",
    "clock_memory_mhz",
    "pstate",
    "processes",
    "ecc_errors_corrected",
    "ecc_errors_uncorrected",
    "mig_mode",
]


def busy_gpu() -> FakeGpu:
    return FakeGpu(
        name="NVIDIA A100-SXM4-40GB",
        uuid="GPU-1234",
        pci_bus_id="00000000:3B:00.0",
        memory_total=40 * GIB,
        memory_used=30 * GIB,
        utilization_gpu=87,
        utilization_memory=55,
        temperature_c=71,
        power_mw=301_500,
        power_limit_mw=400_000,
        clock_graphics_mhz=1410,
        clock_memory_mhz=1215,
        pstate=2,
        compute_processes=[FakeProcess(4242, 20 * GIB, "vllm"), FakeProcess(4343, None, "x")],
        graphics_processes=[FakeProcess(77, 1 * GIB, "Xorg")],
        ecc_corrected=3,
        ecc_uncorrected=1,
        mig_current=1,
    )


def test_every_field_is_read_and_converted() -> None:
    reading = NvmlGpuSource(FakeNvml([busy_gpu()])).read()

    assert (reading.driver_version, reading.cuda_version, reading.nvml_version) == (
        "550.54.15",
        "12.4",
        "12.550.54.15",
    )
    (gpu,) = reading.gpus
    assert gpu.index == 0
    assert (gpu.name, gpu.uuid, gpu.pci_bus_id) == (
        "NVIDIA A100-SXM4-40GB",
        "GPU-1234",
        "00000000:3B:00.0",
    )
    assert (gpu.memory_total_bytes, gpu.memory_used_bytes, gpu.memory_free_bytes) == (
        40 * GIB,
        30 * GIB,
        10 * GIB,
    )
    assert (gpu.utilization_gpu_pct, gpu.utilization_memory_pct) == (87, 55)
    assert gpu.temperature_c == 71
    assert (gpu.power_usage_w, gpu.power_limit_w) == (301.5, 400.0)
    assert (gpu.clock_graphics_mhz, gpu.clock_memory_mhz) == (1410, 1215)
    assert gpu.pstate == 2
    assert gpu.processes is not None
    procs = [(p.pid, p.used_memory_bytes, p.name, p.kind) for p in gpu.processes]
    assert procs == [
        (4242, 20 * GIB, "vllm", "compute"),
        (4343, None, "x", "compute"),
        (77, 1 * GIB, "Xorg", "graphics"),
    ]
    assert (gpu.ecc_errors_corrected, gpu.ecc_errors_uncorrected) == (3, 1)
    assert gpu.mig_mode is True
    assert reading.problems == []


def test_unsupported_fields_are_absent_and_the_rest_still_read() -> None:
    consumer = FakeGpu(name="GeForce RTX 4090", unsupported={"ecc", "mig", "power_limit", "pstate"})
    (gpu,) = NvmlGpuSource(FakeNvml([consumer])).read().gpus

    assert gpu.ecc_errors_corrected is None
    assert gpu.ecc_errors_uncorrected is None
    assert gpu.mig_mode is None
    assert gpu.power_limit_w is None
    assert gpu.pstate is None
    assert gpu.name == "GeForce RTX 4090"
    assert gpu.power_usage_w == 70.0
    assert gpu.memory_free_bytes is not None


def test_a_gpu_that_supports_nothing_reports_only_its_index() -> None:
    (gpu,) = NvmlGpuSource(FakeNvml([FakeGpu(unsupported=set(FIELDS))])).read().gpus
    assert gpu.index == 0
    assert all(getattr(gpu, name) is None for name in OPTIONAL_FIELDS)


def test_processes_absent_only_when_both_lists_are_unsupported() -> None:
    one = FakeGpu(
        unsupported={"graphics_processes", "process_name"},
        compute_processes=[FakeProcess(9, 5)],
    )
    (gpu,) = NvmlGpuSource(FakeNvml([one])).read().gpus
    assert gpu.processes is not None
    assert [(p.pid, p.name, p.kind) for p in gpu.processes] == [(9, None, "compute")]


def test_no_library_is_gpu_unavailable_with_nvmls_own_words() -> None:
    source = NvmlGpuSource(FakeNvml(library_present=False))
    with pytest.raises(GpuUnavailable, match="NVML Shared Library Not Found"):
        source.read()


def test_the_real_pynvml_on_this_gpu_less_machine_is_gpu_unavailable() -> None:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:  # pragma: no cover - only on a machine with a driver
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver; the no-GPU path is not reachable")
    report = collect_gpu_report(NvmlGpuSource(), "n1", 5.0)
    assert report.status == "no_gpu"
    assert report.detail is not None
    assert "NVML" in report.detail
    assert report.gpus == []


def test_zero_gpus_is_no_gpu() -> None:
    with pytest.raises(GpuUnavailable, match="no GPU"):
        NvmlGpuSource(FakeNvml([])).read()


def test_a_lost_gpu_is_a_problem_but_the_others_are_reported() -> None:
    fine, lost = FakeGpu(uuid="GPU-a"), FakeGpu(uuid="GPU-b", lost=True)
    reading = NvmlGpuSource(FakeNvml([fine, lost])).read()
    assert [g.uuid for g in reading.gpus] == ["GPU-a", None]
    assert reading.problems == ["GPU 1: GPU is lost"]

    report = collect_gpu_report(NvmlGpuSource(FakeNvml([fine, lost])), "n1", 5.0)
    assert report.status == "error"
    assert report.detail == "GPU 1: GPU is lost"
    assert len(report.gpus) == 2


def test_count_failure_is_a_read_failure() -> None:
    class Broken(FakeNvml):
        def nvmlDeviceGetCount(self) -> int:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)

    with pytest.raises(GpuReadFailed, match="cannot count"):
        NvmlGpuSource(Broken()).read()


def test_init_is_retried_until_the_library_appears_and_close_shuts_down() -> None:
    nvml = FakeNvml(library_present=False)
    source = NvmlGpuSource(nvml)
    assert collect_gpu_report(source, "n1", 1.0).status == "no_gpu"
    nvml.library_present = True
    assert collect_gpu_report(source, "n1", 1.0).status == "ok"
    assert nvml.init_calls == 2
    source.close()
    assert nvml.initialised is False


def test_report_is_a_valid_v1_envelope_payload_with_absent_fields_left_out() -> None:
    gpu = FakeGpu(unsupported={"ecc", "mig"})
    report = collect_gpu_report(NvmlGpuSource(FakeNvml([gpu])), "node-a", 2.0)
    wire = Envelope[GpuMetricsReported](type=EVENT_METRICS, source="t", data=report)
    decoded = decode_envelope(wire.model_dump_json(exclude_none=True))
    assert isinstance(decoded.data, GpuMetricsReported)
    assert decoded.data.gpus[0].ecc_errors_corrected is None
    assert "ecc_errors_corrected" not in wire.model_dump(exclude_none=True)["data"]["gpus"][0]
    assert decoded.data.interval_s == 2.0


@pytest.mark.parametrize(
    ("raw", "text"), [(12040, "12.4"), (11080, "11.8"), (0, None), (None, None)]
)
def test_cuda_version_formatting(raw: int | None, text: str | None) -> None:
    assert cuda_version(raw) == text


def test_unknown_fake_field_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown fake GPU fields"):
        FakeGpu(unsupported={"ecc", "warp_drive"})
