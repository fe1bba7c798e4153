"""A minimal valid payload for any message model, derived from its JSON Schema.

Tests use it so that a message added to the registry is covered by the round-trip and
compatibility tests without hand-written examples.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

_NOW = "2026-01-02T03:04:05.123456Z"


def minimal_payload(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    return _object(schema, schema.get("$defs", {}))


def _object(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    props = schema.get("properties", {})
    return {name: _value(props[name], defs) for name in schema.get("required", [])}


def _value(schema: dict[str, Any], defs: dict[str, Any]) -> Any:
    if "$ref" in schema:
        return _value(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "anyOf" in schema:
        return _value(next(s for s in schema["anyOf"] if s.get("type") != "null"), defs)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return _object(schema, defs)
    if kind == "array":
        count = schema.get("minItems", 0)
        return [_value(schema.get("items", {}), defs) for _ in range(count)]
    if kind == "integer":
        return max(schema.get("minimum", 1), schema.get("exclusiveMinimum", 0) + 1)
    if kind == "number":
        return float(max(schema.get("minimum", 1), schema.get("exclusiveMinimum", 0) + 1))
    if kind == "boolean":
        return True
    if schema.get("format") == "date-time":
        return _NOW
    return "x" * max(1, schema.get("minLength", 1))
