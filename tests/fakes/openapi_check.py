"""Validate a fake's answer against the vendor's OpenAPI description (the subsets in tests/specs/).

OpenAPI 3.0 schemas are JSON Schema with differences: ``nullable: true`` becomes a ``"null"`` type here;
everything else used by these subsets (allOf, oneOf, enum, required, additionalProperties) is the same.
``null_ok`` lists properties the vendor documents as possibly null in prose but not in the schema (named
where used, with the sentence that says so).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

SPECS = Path(__file__).parent.parent / "specs"


def _convert(node: Any) -> Any:
    if isinstance(node, list):
        return [_convert(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _convert(v) for k, v in node.items()}
    if out.pop("nullable", False) is True:
        out = {"anyOf": [out, {"type": "null"}]}
    return out


def load(name: str, *, null_ok: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    """The spec ``name`` as JSON Schema; ``null_ok``: (schema, property) pairs that may also be null."""
    doc: dict[str, Any] = _convert(json.loads((SPECS / name).read_text()))
    for schema, prop in null_ok:
        props = doc["components"]["schemas"][schema]["properties"]
        props[prop] = {"anyOf": [props[prop], {"type": "null"}]}
    return doc


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def check(doc: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``body`` is what the spec says ``method path`` answers
    with ``status``."""
    responses = doc["paths"][path][method]["responses"]
    response = responses[str(status)]
    if "$ref" in response:
        ref = response["$ref"][2:].split("/")
        ptr = _pointer(*ref, "content", "application/json", "schema")
    else:
        ptr = _pointer("paths", path, method, "responses", str(status), "content", "application/json", "schema")
    schema = {**doc, "$ref": ptr}
    jsonschema.Draft202012Validator(schema).validate(body)


def check_schema(doc: dict[str, Any], schema: str, body: Any) -> None:
    """Validate ``body`` against ``components/schemas/<schema>`` (for answers the spec gives no schema of its
    own, e.g. Jira's 401/404, which its docs describe as an ErrorCollection)."""
    jsonschema.Draft202012Validator({**doc, "$ref": _pointer("components", "schemas", schema)}).validate(body)
