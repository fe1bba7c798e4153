"""A real Triton Inference Server on CPU (nvidia-pytriton) with three tiny deterministic models.

Used by the Triton adapter's tests and the end-to-end suite; run it by hand with::

    python -m hyperinfer.client.testing.triton_server --http-port 8000 --grpc-port 8001

Models (KServe v2, no batching dimension):

- ``tinygen``: text generation. ``text_input`` BYTES[1] (a prompt in the Triton adapter's
  ``role: text`` template, ending with ``assistant:``), optional ``max_tokens`` INT32[1] →
  ``text_output`` BYTES[1]. It answers ``You said: <the last user line>``, one word per
  "token", cut at ``max_tokens`` words.
- ``tinygen_stream``: the same, decoupled: one response per word (streaming).
- ``tensor_add``: ``a`` FP32[-1], ``b`` FP32[-1] → ``sum`` and ``product`` FP32[-1].

:class:`TritonServerProcess` starts this module in a subprocess and waits until every model
is ready. pytriton is imported only inside :func:`serve` (it belongs to the ``backends``
dependency group, not to the client library).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TEXT_MODEL = "tinygen"
STREAM_MODEL = "tinygen_stream"
TENSOR_MODEL = "tensor_add"
MODELS = (TEXT_MODEL, STREAM_MODEL, TENSOR_MODEL)
DEFAULT_MAX_TOKENS = 64


def reply_words(prompt: str, max_tokens: int) -> list[str]:
    """What tinygen answers to ``prompt``: ``You said: <last user line>``, as words."""
    user_lines = [ln[5:].strip() for ln in prompt.splitlines() if ln.startswith("user:")]
    heard = user_lines[-1] if user_lines else prompt.strip()
    return ["You", "said:", *heard.split()][: max(0, max_tokens)]


def _decode(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _prompt_and_budget(request: Any) -> tuple[str, int]:
    prompt = _decode(request["text_input"].reshape(-1)[0])
    max_tokens = DEFAULT_MAX_TOKENS
    if "max_tokens" in request.data:
        max_tokens = int(request["max_tokens"].reshape(-1)[0])
    return prompt, max_tokens


def _text(words: list[str]) -> Any:
    import numpy as np

    return np.array([" ".join(words).encode()], dtype=np.object_)


def generate(requests: list[Any]) -> list[dict[str, Any]]:
    return [{"text_output": _text(reply_words(*_prompt_and_budget(r)))} for r in requests]


def generate_stream(requests: list[Any]) -> Iterator[list[dict[str, Any]]]:
    for request in requests:  # pytriton hands a decoupled model one request at a time
        words = reply_words(*_prompt_and_budget(request))
        for i, word in enumerate(words):
            yield [{"text_output": _text([word if i == 0 else " " + word])}]


def add(requests: list[Any]) -> list[dict[str, Any]]:
    import numpy as np

    out = []
    for r in requests:
        a, b = r["a"].astype(np.float32), r["b"].astype(np.float32)
        if a.shape != b.shape:
            raise ValueError(f"a and b differ in shape: {a.shape} vs {b.shape}")
        out.append({"sum": a + b, "product": a * b})
    return out


def serve(http_port: int, grpc_port: int, metrics_port: int) -> None:
    """Bind the three models and serve until SIGINT/SIGTERM."""
    # pytriton's Python backend stub needs the running interpreter's libpython on the
    # library path, or every model load fails (``_thread.RLock`` has no ``_recursion_count``).
    libdir = str(sysconfig.get_config_var("LIBDIR"))
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (libdir, os.environ.get("LD_LIBRARY_PATH", "")) if p
    )
    import numpy as np
    from pytriton.model_config import ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=http_port,
        grpc_address="127.0.0.1",
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        allow_gpu_metrics=False,
        exit_on_error=True,
    )
    text_in = [
        Tensor(name="text_input", dtype=np.bytes_, shape=(1,)),
        Tensor(name="max_tokens", dtype=np.int32, shape=(1,), optional=True),
    ]
    text_out = [Tensor(name="text_output", dtype=np.bytes_, shape=(1,))]
    with Triton(config=config) as triton:
        triton.bind(TEXT_MODEL, generate, text_in, text_out, config=ModelConfig(batching=False))
        triton.bind(
            STREAM_MODEL,
            generate_stream,
            text_in,
            text_out,
            config=ModelConfig(batching=False, decoupled=True),
        )
        triton.bind(
            TENSOR_MODEL,
            add,
            [Tensor(name=n, dtype=np.float32, shape=(-1,)) for n in ("a", "b")],
            [Tensor(name=n, dtype=np.float32, shape=(-1,)) for n in ("sum", "product")],
            config=ModelConfig(batching=False),
        )
        print(f"triton ready on http://127.0.0.1:{http_port}", flush=True)  # noqa: T201
        triton.serve()


class TritonServerProcess:
    """This module's server in a subprocess, for tests: ``start()`` waits for every model."""

    def __init__(self, workdir: Path, http_port: int, grpc_port: int, metrics_port: int) -> None:
        self.workdir = workdir
        self.ports = (http_port, grpc_port, metrics_port)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports[0]}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "triton.log"

    def start(self, timeout_s: float = 90.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", __name__, "--http-port", str(self.ports[0])]
        argv += ["--grpc-port", str(self.ports[1]), "--metrics-port", str(self.ports[2])]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, cwd=self.workdir)
        try:
            self._wait_ready(timeout_s)
        except RuntimeError:
            self.stop()
            raise

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"Triton exited while starting:\n{self._log_tail()}")
            if all(self._model_ready(m) for m in MODELS):
                return
            time.sleep(0.2)
        raise RuntimeError(f"Triton not ready after {timeout_s}s:\n{self._log_tail()}")

    def _model_ready(self, model: str) -> bool:
        url = f"{self.url}/v2/models/{model}/ready"
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(url, timeout=1) as resp,  # noqa: S310 (loopback only)
        ):
            return int(resp.status) == 200
        return False

    def _log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Tiny deterministic models on Triton (CPU)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    args = parser.parse_args(argv)
    serve(args.http_port, args.grpc_port, args.metrics_port)


if __name__ == "__main__":
    main()
