"""Committed JSON Schemas and the AsyncAPI document match the models, and are valid."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml
from hyperinfer.contracts import names
from hyperinfer.contracts.catalog import asyncapi_document, json_schemas
from hyperinfer.contracts.registry import MESSAGES, spec_for

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = ROOT / "contracts"


def _gen_schemas() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_schemas", ROOT / "scripts/gen_schemas.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_snapshots_match_the_models() -> None:
    rendered: dict[Path, str] = _gen_schemas().rendered()
    drifted = [
        str(p.relative_to(ROOT))
        for p, text in rendered.items()
        if not p.exists() or p.read_text() != text
    ]
    assert drifted == [], f"run `task schemas` and commit: {drifted}"
    committed = set((CONTRACTS / "schemas").glob("*.json"))
    assert committed <= set(rendered), f"stale schema files: {committed - set(rendered)}"


def test_drift_check_notices_a_changed_file(tmp_path: Path) -> None:
    module = _gen_schemas()
    module.CONTRACTS = tmp_path
    assert module.main(["--check"]) == 1
    assert module.main([]) == 0
    assert module.main(["--check"]) == 0
    first = next((tmp_path / "schemas").glob("*.json"))
    first.write_text(first.read_text().replace('"type"', '"tpye"', 1))
    assert module.main(["--check"]) == 1


@pytest.mark.parametrize("name", sorted(json_schemas()))
def test_each_snapshot_is_a_valid_json_schema(name: str) -> None:
    schema = json.loads((CONTRACTS / "schemas" / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)


def test_asyncapi_document_validates_against_the_asyncapi_3_schema() -> None:
    document = yaml.safe_load((CONTRACTS / "asyncapi.yaml").read_text())
    meta = json.loads((CONTRACTS / "asyncapi/asyncapi-3.0.0.schema.json").read_text())
    jsonschema.Draft7Validator(meta).validate(document)


def test_every_reference_in_the_asyncapi_document_resolves() -> None:
    document = asyncapi_document()
    refs = list(_refs(document))
    assert refs
    for ref in refs:
        node: Any = document
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(node, dict), f"dangling $ref {ref}"
            assert part in node, f"dangling $ref {ref}"
            node = node[part]


def test_asyncapi_covers_every_message_and_subject() -> None:
    document = asyncapi_document()
    addresses = {c["address"] for c in document["channels"].values()}
    assert {s.channel for s in MESSAGES} <= addresses
    for subject in (
        names.CONFIG_CHANGED,
        names.USAGE_STREAM,
        names.QUOTA_CHECK,
        names.ROUTING_TABLE,
        names.CONFIG_UPDATES_CHANNEL,
    ):
        assert subject in addresses
    assert len(document["components"]["messages"]) >= len(MESSAGES)


def test_a_payload_validates_against_its_snapshot() -> None:
    from hyperinfer.contracts.examples import minimal_payload

    schema = json.loads((CONTRACTS / "schemas/usage.recorded.v1.json").read_text())
    envelope = {
        "type": "usage.recorded",
        "source": "t",
        "id": "1",
        "data": minimal_payload(spec_for("usage.recorded").model),
    }
    jsonschema.validate(envelope, schema)
    envelope["data"]["prompt_tokens"] = "many"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(envelope, schema)


def _refs(node: Any) -> Any:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)
