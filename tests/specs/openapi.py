"""Holding an exchange to an OpenAPI 3.0 description (Okta's management API, vendored under tests/specs/okta).

``OpenApiSpec.check`` finds the operation for a request (method and path template), checks that every
query parameter is declared and has the declared type, and validates a successful JSON answer against
the operation's response schema. OpenAPI 3.0 schemas become JSON Schema 2020-12: ``nullable`` adds
``null`` to the type, ``$ref`` points into the document's ``components``, and an object schema with
``properties`` and no ``additionalProperties`` admits no undeclared property (``unevaluatedProperties``,
so that ``allOf`` compositions still work): an undeclared field in the fake is drift. Error answers
are not checked.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema

OKTA_MANAGEMENT = Path(__file__).parent / "okta" / "management.subset.json"


def _convert(schema: Any, *, closed: bool = True) -> Any:
    """An OpenAPI 3.0 schema as JSON Schema 2020-12; ``closed`` objects admit no undeclared property.

    A branch of ``allOf`` / ``anyOf`` / ``oneOf`` is never closed on its own (it would refuse its
    siblings' properties): the schema holding the composition is closed instead."""
    if isinstance(schema, list):
        return [_convert(s, closed=closed) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("nullable", "discriminator", "xml"):
            continue
        branch = key in ("allOf", "anyOf", "oneOf")
        out[key] = _convert(value, closed=closed and not branch)
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    elif schema.get("nullable") and "$ref" in out:
        out = {"anyOf": [{"$ref": out.pop("$ref")}, {"type": "null"}], **out}
    open_ended = "additionalProperties" in schema or "unevaluatedProperties" in schema
    if closed and not open_ended and ("properties" in schema or "allOf" in schema):
        out["unevaluatedProperties"] = False
    return out


def _composed(doc: dict[str, Any]) -> set[str]:
    """Names of the component schemas used as a branch of a composition (never closed on their own)."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("allOf", "anyOf", "oneOf"):
                    names.update(str(b["$ref"]).rsplit("/", 1)[-1] for b in value if "$ref" in b)
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    return names


def _dispatch(doc: dict[str, Any]) -> dict[str, Any]:
    """The document with every use of a schema that has a ``discriminator`` mapping (outside a composition)
    made to select the mapped schema by the discriminator's value, as OpenAPI 3.0 describes: a value
    ``{"$ref": base}`` becomes ``allOf`` of the base and, for each mapping, ``if`` the property has that
    value ``then`` the mapped schema. Without a value only the base holds."""
    schemas = doc.get("components", {}).get("schemas", {})

    def mapped(node: dict[str, Any]) -> dict[str, Any] | None:
        ref = node.get("$ref")
        if not isinstance(ref, str) or not ref.startswith("#/components/schemas/"):
            return None
        target = schemas.get(ref.rsplit("/", 1)[-1], {})
        return target.get("discriminator") if isinstance(target.get("discriminator"), dict) else None

    def walk(node: Any, branch: bool = False) -> Any:
        if isinstance(node, list):
            return [walk(v, branch) for v in node]
        if not isinstance(node, dict):
            return node
        found = None if branch else mapped(node)
        if found and found.get("mapping"):
            prop = found["propertyName"]
            rest = {k: v for k, v in node.items() if k != "$ref"}
            picks = [{"if": {"properties": {prop: {"const": value}}, "required": [prop]}, "then": {"$ref": target}}
                     for value, target in found["mapping"].items() if target != node["$ref"]]
            return {"allOf": [{"$ref": node["$ref"]}, *picks], **rest}
        return {k: walk(v, k in ("allOf", "anyOf", "oneOf")) for k, v in node.items()}

    return {k: walk(v) for k, v in doc.items()}


_UNSET: Any = object()


class OpenApiSpec:
    """The operations of a (vendored) OpenAPI 3.0 document, to check exchanges against.

    With ``discriminators``, a schema's ``discriminator`` mapping selects the derived schema an answer is
    held to (``_dispatch``)."""

    def __init__(self, path: Path, *, discriminators: bool = False) -> None:
        self.doc = json.loads(path.read_text())
        if discriminators:
            self.doc = _dispatch(self.doc)
        self.version = str(self.doc["info"]["version"])
        composed = _composed(self.doc)
        components = self.doc.get("components", {})
        self._components = {kind: {name: _convert(node, closed=name not in composed) for name, node in group.items()}
                            for kind, group in components.items()}
        self._validators: dict[str, jsonschema.Draft202012Validator] = {}
        self._ops: list[tuple[str, re.Pattern[str], dict[str, Any], list[dict[str, Any]]]] = []
        for template, item in self.doc["paths"].items():
            pattern = re.compile(re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)))
            for method, op in item.items():
                if method == "parameters":
                    continue
                params = [self._resolve(p) for p in item.get("parameters", []) + op.get("parameters", [])]
                self._ops.append((method.upper(), pattern, op, params))

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            _, _, kind, name = str(node["$ref"]).split("/", 3)
            node = self.doc["components"][kind][name]
        return node

    def _validate(self, schema: dict[str, Any], value: Any, what: str) -> list[str]:
        key = json.dumps(schema, sort_keys=True)
        validator = self._validators.get(key)
        if validator is None:  # built once per schema: the fakes check every exchange
            validator = jsonschema.Draft202012Validator({**_convert(schema), "components": self._components})
            self._validators[key] = validator
        return [f"{what}{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(value)]

    def check(self, method: str, path: str, query: dict[str, str], status: int, answer: Any, *,
              body: Any = _UNSET) -> list[str]:
        """Every way the exchange departs from the document (empty when it conforms). A JSON request
        ``body`` (None: none sent) is checked against the operation's request body when given."""
        found = [(op, params) for m, pattern, op, params in self._ops if m == method and pattern.fullmatch(path)]
        if not found:
            return [f"{method} {path}: no such operation in the OpenAPI description"]
        op, params = found[0]
        name = op.get("operationId", f"{method} {path}")
        declared = {p["name"]: p for p in params if p.get("in") == "query"}
        problems = []
        for key, value in query.items():
            if key not in declared:
                problems.append(f"{name}: undocumented query parameter {key}")
                continue
            schema = declared[key].get("schema", {})
            typed: Any = value
            if schema.get("type") == "integer":
                typed = int(value) if value.lstrip("-").isdigit() else value
            elif schema.get("type") == "boolean":
                typed = {"true": True, "false": False}.get(value, value)
            elif schema.get("type") == "array" and declared[key].get("explode") is False:
                typed = value.split(",")  # style form, not exploded: comma-separated
            problems += self._validate(schema, typed, f"{name}: {key}")
        if body is not _UNSET:
            problems += self._check_body(name, op, body)
        if 200 <= status < 300:
            responses = op["responses"]
            response = self._resolve(responses.get(str(status)) or responses.get(f"{status // 100}XX") or {})
            content = response.get("content", {})
            schema = (content.get("application/json") or {}).get("schema")
            if schema is None and answer is not None:
                problems.append(f"{name}: {status} carries no body in the description")
            elif schema is not None:
                problems += self._validate(schema, answer, f"{name} answer")
        return problems

    def _check_body(self, name: str, op: dict[str, Any], body: Any) -> list[str]:
        declared = self._resolve(op["requestBody"]) if "requestBody" in op else None
        if declared is None:
            return [] if body is None else [f"{name}: a request body, which the description does not declare"]
        if body is None:
            return [f"{name}: no request body, which the description requires"] if declared.get("required") else []
        schema = ((declared.get("content") or {}).get("application/json") or {}).get("schema")
        return [] if schema is None else self._validate(schema, body, f"{name} request body")
