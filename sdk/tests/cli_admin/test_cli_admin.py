"""The ``hyperinfer`` admin commands against a real config service process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from hyperinfer.client.cli import app
from hyperinfer.client.keys import hash_api_key
from hyperinfer.config.testing import TEST_KEY_HASH_SALT, ConfigServiceProcess
from typer.testing import CliRunner


@pytest.fixture
def service(
    postgres_dsn: str, redis_url: str, nats_url: str, tmp_path: Path
) -> Iterator[ConfigServiceProcess]:
    with ConfigServiceProcess(
        postgres_dsn=postgres_dsn, redis_url=redis_url, nats_url=nats_url, workdir=tmp_path
    ) as proc:
        yield proc


@pytest.fixture
def cli(service: ConfigServiceProcess) -> CliRunner:
    return CliRunner(
        env={"HYPERINFER_CONFIG_URL": service.url, "HYPERINFER_ADMIN_KEY": service.admin_key}
    )


def run(cli: CliRunner, *args: str, ok: bool = True) -> str:
    result = cli.invoke(app, list(args))
    if ok:
        assert result.exit_code == 0, f"{result.output}{result.exception!r}"
        return result.output
    assert result.exit_code != 0
    return f"{result.output}{result.exception or ''}"  # main() prints a CliError as one line


def run_json(cli: CliRunner, *args: str) -> object:
    return json.loads(run(cli, *args, "--json"))


def test_team_create_and_list(cli: CliRunner) -> None:
    assert "created team acme (Acme)" in run(cli, "team", "create", "Acme", "--id", "acme")
    run(cli, "team", "create", "Beta", "--id", "beta", "--budget-micros", "5000000")
    listing = run(cli, "team", "list")
    assert listing.splitlines()[0].split() == ["ID", "NAME", "BUDGET_MICROS", "VERSION"]
    assert "beta" in listing
    assert "5000000" in listing
    teams = run_json(cli, "team", "list")
    assert [t["id"] for t in teams] == ["acme", "beta"]  # type: ignore[index, union-attr]


def test_key_create_prints_plaintext_once_then_revoke(cli: CliRunner, redis_url: str) -> None:
    run(cli, "team", "create", "acme", "--id", "acme")
    out = run(cli, "key", "create", "--team", "acme", "--name", "ci", "--scope", "chat")
    plaintext = next(line for line in out.splitlines() if line.startswith("hi-"))
    assert "not shown again" in out
    stored = redis.Redis.from_url(redis_url).hget("hyperinfer:config", "document")
    assert hash_api_key(plaintext, TEST_KEY_HASH_SALT) in stored.decode()  # type: ignore[union-attr]

    keys = run_json(cli, "key", "list", "--team", "acme")
    assert len(keys) == 1  # type: ignore[arg-type]
    key = keys[0]  # type: ignore[index]
    listing = run(cli, "key", "list")
    assert plaintext not in listing
    assert key["key_hint"] in listing

    assert f"revoked key {key['id']}" in run(cli, "key", "revoke", key["id"])
    assert run_json(cli, "key", "list", "--active-only") == []
    rotated = run_json(cli, "key", "create", "--team", "acme")
    assert rotated["key"].startswith("hi-")  # type: ignore[index]


def test_alias_set_creates_then_replaces(cli: CliRunner) -> None:
    run(cli, "team", "create", "acme", "--id", "acme")
    run(cli, "backend", "add", "echo", "--id", "echo", "--kind", "echo", "--model", "echo")
    run(cli, "backend", "add", "echo2", "--id", "echo2", "--kind", "echo")
    out = run(cli, "alias", "set", "chat", "--target", "echo:echo")
    assert out.strip() == "chat (global): echo:echo"
    out = run(cli, "alias", "set", "chat", "--target", "echo2:big", "--target", "echo:echo")
    assert out.strip() == "chat (global): echo2:big → echo:echo"
    run(cli, "alias", "set", "chat", "--team", "acme", "--target", "echo:echo")
    aliases = run_json(cli, "alias", "list")
    found = {(a["name"], a["team_id"] or "-", a["version"]) for a in aliases}  # type: ignore[index, union-attr]
    assert found == {("chat", "-", 2), ("chat", "acme", 1)}
    bad = run(cli, "alias", "set", "x", "--target", "nobackend:m", ok=False)
    assert "no backend" in bad


def test_quota_set_creates_then_updates(cli: CliRunner) -> None:
    run(cli, "team", "create", "acme", "--id", "acme")
    out = run(cli, "quota", "set", "--team", "acme", "--rpm", "60", "--budget-micros", "1000")
    assert out.strip() == "quota team acme (monthly): rpm=60, budget_micros=1000, grace_micros=0"
    updated = run_json(cli, "quota", "set", "--team", "acme", "--tpm", "9000", "--period", "daily")
    assert (updated["rpm"], updated["tpm"], updated["budget_period"], updated["version"]) == (  # type: ignore[index]
        60,
        9000,
        "daily",
        2,
    )
    key = run_json(cli, "key", "create", "--team", "acme")
    per_key = run_json(cli, "quota", "set", "--key", key["id"], "--rpm", "5")  # type: ignore[index]
    assert (per_key["scope"], per_key["team_id"]) == ("key", "acme")  # type: ignore[index]


def test_backend_add_reads_the_upstream_key_from_the_environment(
    cli: CliRunner, service: ConfigServiceProcess
) -> None:
    os.environ["TEST_UPSTREAM_KEY"] = "sk-from-env-123456"
    try:
        out = run(
            cli,
            "backend",
            "add",
            "OpenAI",
            "--id",
            "openai",
            "--kind",
            "openai",
            "--base-url",
            "https://api.openai.example/v1",
            "--api-key-env",
            "TEST_UPSTREAM_KEY",
        )
    finally:
        del os.environ["TEST_UPSTREAM_KEY"]
    assert "added backend openai" in out
    backends = run_json(cli, "backend", "list")
    assert backends[0]["has_credentials"] is True  # type: ignore[index]
    assert "sk-from-env" not in run(cli, "backend", "list")
    assert "sk-from-env" not in run(cli, "config", "show", "--json")
    missing = run(
        cli, "backend", "add", "x", "--kind", "openai", "--api-key-env", "NOPE_UNSET", ok=False
    )
    assert "NOPE_UNSET" in missing


def test_config_show_and_version(cli: CliRunner) -> None:
    run(cli, "team", "create", "acme", "--id", "acme")
    version = run_json(cli, "config", "version")
    assert version["version"] == version["published_version"] == version["redis_version"] > 0  # type: ignore[index]
    assert run(cli, "config", "version").startswith(f"{version['version']} (published")  # type: ignore[index]
    snapshot = run_json(cli, "config", "show")
    assert snapshot["teams"]["acme"]["name"] == "acme"  # type: ignore[index]
    assert run(cli, "config", "show").startswith(f"config version {version['version']}")  # type: ignore[index]


def test_failures_are_one_line_without_traceback(
    service: ConfigServiceProcess, tmp_path: Path
) -> None:
    """Through the installed entry point: a refused call and an unreachable service."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("HYPERINFER_")}
    env = {**base, "HYPERINFER_CONFIG_URL": service.url, "HYPERINFER_ADMIN_KEY": "wrong-key-123"}
    cmd = [sys.executable, "-c", "from hyperinfer.client.cli import main; main()"]
    refused = subprocess.run([*cmd, "team", "list"], env=env, capture_output=True, text=True)
    assert refused.returncode == 1
    assert refused.stderr.strip() == "error: HTTP 401: unknown, revoked or expired key"
    env["HYPERINFER_CONFIG_URL"] = "http://127.0.0.1:9"
    down = subprocess.run([*cmd, "team", "list"], env=env, capture_output=True, text=True)
    assert down.returncode == 1
    assert down.stderr.startswith("error: cannot reach http://127.0.0.1:9")
    assert "Traceback" not in down.stderr
    no_key = {**base, "HYPERINFER_CONFIG_URL": service.url}
    missing = subprocess.run([*cmd, "team", "list"], env=no_key, capture_output=True, text=True)
    assert missing.stderr.strip().startswith("error: no admin key")
