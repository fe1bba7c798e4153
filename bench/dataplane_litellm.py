"""The LiteLLM proxy, for comparison (helper of ``bench/dataplane.py``).

Installed into ``bench/.venv-litellm`` (ignored by git) from PyPI the first time, pinned:
``litellm[proxy]==1.106.12``. (1.107.0 was a compromised release and is gone from the
index; the 1.108+ ``proxy`` extra needs a ``litellm-proxy`` package the index does not
serve.) Configured with one model pointing at the fake upstream and a master key, no
database: so LiteLLM authenticates but tracks no spend and enforces no budget here,
which flatters it against an ingress with auth + quota + usage on.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from dataplane_procs import ROOT, Proc, pinned

VERSION = "1.106.12"
VENV = ROOT / "bench" / ".venv-litellm"
MASTER_KEY = "sk-bench-litellm"
MODEL = "bench"


def ensure_litellm() -> Path:
    exe = VENV / "bin" / "litellm"
    if exe.exists():
        return exe
    print(f"installing litellm[proxy]=={VERSION} into {VENV} (once)", file=sys.stderr)
    uv = shutil.which("uv")
    if uv:
        subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(VENV)], check=True)
        install = [uv, "pip", "install", "-q", "--python", str(VENV / "bin" / "python")]
    else:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        install = [str(VENV / "bin" / "pip"), "install", "-q"]
    subprocess.run([*install, f"litellm[proxy]=={VERSION}"], check=True)
    return exe


def config_yaml(upstream_url: str, upstream_model: str) -> str:
    return f"""model_list:
  - model_name: {MODEL}
    litellm_params:
      model: openai/{upstream_model}
      api_base: {upstream_url}/v1
      api_key: fake
general_settings:
  master_key: {MASTER_KEY}
litellm_settings:
  telemetry: false
"""


def litellm_proc(
    workdir: Path, port: int, upstream_url: str, upstream_model: str, cores: str
) -> Proc:
    config = workdir / "litellm.yaml"
    config.write_text(config_yaml(upstream_url, upstream_model))
    argv = [str(ensure_litellm()), "--config", str(config), "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--num_workers", "1"]
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    return Proc("litellm", pinned(cores, argv), workdir / "litellm.log", env)
