"""The demo seed against a real config service process: idempotent, secrets only in FILE."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hyperinfer.config.testing import ConfigServiceProcess


@pytest.fixture
def service(
    postgres_dsn: str, redis_url: str, nats_url: str, tmp_path: Path
) -> Iterator[ConfigServiceProcess]:
    with ConfigServiceProcess(
        postgres_dsn=postgres_dsn, redis_url=redis_url, nats_url=nats_url, workdir=tmp_path
    ) as proc:
        yield proc


def seed(
    service: ConfigServiceProcess, out: Path, local_model_url: str | None = None, url: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYPERINFER_")}
    if local_model_url:
        env["HYPERINFER_LOCAL_MODEL_URL"] = local_model_url
    args = ["--config-url", url or service.url, "--admin-key", service.admin_key, "--out", str(out)]
    return subprocess.run(
        [sys.executable, "-m", "hyperinfer.config.seed", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def admin(service: ConfigServiceProcess) -> httpx.Client:
    return httpx.Client(base_url=f"{service.url}/v1/admin", headers=service.admin_headers)


def version(service: ConfigServiceProcess) -> int:
    with admin(service) as api:
        return int(api.get("/audit", params={"limit": 1}).json()["items"][0]["config_version"])


def test_seed_creates_the_demo_tenant(service: ConfigServiceProcess, tmp_path: Path) -> None:
    out = tmp_path / "demo" / "key.json"
    done = seed(service, out)
    assert done.returncode == 0, done.stderr
    written = json.loads(out.read_text())
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert written["team_id"] == "demo"
    assert written["aliases"] == ["demo-chat", "demo-echo"]
    assert written["alias"] == "demo-chat"
    assert written["ingress_url"] == "http://127.0.0.1:8080"
    assert written["api_key"] not in done.stdout + done.stderr
    assert "created" in done.stdout
    with admin(service) as api:
        key = api.post("/keys/lookup", json={"key": written["api_key"]}).json()
        assert (key["team_id"], key["active"]) == ("demo", True)
        aliases = api.get("/aliases", params={"team_id": "demo"}).json()["items"]
        targets = {a["name"]: [t["backend_id"] for t in a["targets"]] for a in aliases}
        assert targets == {"demo-chat": ["echo"], "demo-echo": ["echo"]}
        assert api.get("/backends/echo").json()["kind"] == "echo"


def test_second_run_reuses_the_key_and_changes_nothing(
    service: ConfigServiceProcess, tmp_path: Path
) -> None:
    out = tmp_path / "key.json"
    assert seed(service, out).returncode == 0
    first = json.loads(out.read_text())
    before = version(service)
    again = seed(service, out)
    assert again.returncode == 0, again.stderr
    assert "reused" in again.stdout
    assert json.loads(out.read_text())["api_key"] == first["api_key"]
    assert version(service) == before  # not one change committed


def test_a_key_that_no_longer_works_is_replaced(
    service: ConfigServiceProcess, tmp_path: Path
) -> None:
    out = tmp_path / "key.json"
    assert seed(service, out).returncode == 0
    first = json.loads(out.read_text())
    out.unlink()  # the file is lost: the existing demo key is rotated
    rotated = seed(service, out)
    assert "rotated" in rotated.stdout
    second = json.loads(out.read_text())
    assert second["key_id"] == first["key_id"]
    assert second["api_key"] != first["api_key"]
    with admin(service) as api:
        assert api.post("/keys/lookup", json={"key": first["api_key"]}).status_code == 404
        api.post(f"/keys/{second['key_id']}/revoke").raise_for_status()
    replaced = seed(service, out)  # revoked: a new key is created
    assert "created" in replaced.stdout
    third = json.loads(out.read_text())
    assert third["key_id"] != second["key_id"]
    with admin(service) as api:
        active = api.get("/keys", params={"team_id": "demo", "active": "true"}).json()["items"]
        assert [k["id"] for k in active] == [third["key_id"]]


def test_local_model_becomes_the_primary_with_echo_fallback(
    service: ConfigServiceProcess, tmp_path: Path
) -> None:
    out = tmp_path / "key.json"
    assert seed(service, out).returncode == 0
    done = seed(service, out, local_model_url="http://127.0.0.1:18099/v1")
    assert done.returncode == 0, done.stderr
    with admin(service) as api:
        local = api.get("/backends/local-smollm2").json()
        assert (local["kind"], local["base_url"], local["models"]) == (
            "openai_compatible",
            "http://127.0.0.1:18099/v1",
            ["smollm2-135m"],
        )
        chat = api.get("/aliases", params={"name": "demo-chat"}).json()["items"][0]
        assert [(t["backend_id"], t["model"]) for t in chat["targets"]] == [
            ("local-smollm2", "smollm2-135m"),
            ("echo", "echo"),
        ]
        # the router must not spread demo-chat over both: the local model first, always
        rules = api.get("/routing-rules", params={"alias": "demo-chat"}).json()["items"]
        assert [(r["name"], r["strategy"]) for r in rules] == [("demo-chat", "ordered")]
    assert json.loads(out.read_text())["local_model"] == "smollm2-135m"


def test_unreachable_service_is_one_line(service: ConfigServiceProcess, tmp_path: Path) -> None:
    done = seed(service, tmp_path / "key.json", url="http://127.0.0.1:9")
    assert done.returncode == 1
    assert done.stderr.startswith("seed: cannot reach the config service")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "key.json").exists()
