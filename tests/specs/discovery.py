"""Holding an exchange with a Google API to its discovery document (``admin.directory_v1``, the Cloud
Identity Groups API ``cloudidentity.v1``).

``DiscoverySpec`` checks a request (method, path, query parameters and their types, the JSON body)
and, for a successful answer, the JSON body against the method's request / response schema. Discovery
schemas become JSON Schema: ``$ref`` to ``#/definitions``, ``type: any`` to anything, and objects with
``properties`` admit no other property (an API answer carries declared fields only; an undeclared one
in the fake is drift). Error answers are not described by the discovery document and are not checked.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

GOOGLE_DIRECTORY = Path(__file__).parent / "google" / "admin.directory_v1.subset.json"
GOOGLE_CLOUD_IDENTITY = Path(__file__).parent / "google" / "cloudidentity.v1.subset.json"
_BOOLEAN = re.compile(r"true|false")


def _json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A discovery schema as a JSON Schema (draft 2020-12 keywords)."""
    if "$ref" in schema:
        return {"$ref": f"#/definitions/{schema['$ref']}"}
    kind = schema.get("type")
    out: dict[str, Any] = {}
    if kind == "object":
        out["type"] = "object"
        if "properties" in schema:
            out["properties"] = {k: _json_schema(v) for k, v in schema["properties"].items()}
        extra = schema.get("additionalProperties")
        out["additionalProperties"] = _json_schema(extra) if isinstance(extra, dict) else "properties" not in schema
    elif kind == "array":
        out["type"] = "array"
        if "items" in schema:
            out["items"] = _json_schema(schema["items"])
    elif kind == "string":
        out["type"] = "string"
        if "enum" in schema:
            out["enum"] = schema["enum"]
    elif kind in ("integer", "number", "boolean"):
        out["type"] = kind
    return out  # "any", or no type: anything


@dataclass(frozen=True)
class _Method:
    name: str
    http: str
    path: re.Pattern[str]
    params: dict[str, dict[str, Any]]
    request: str | None
    response: str | None


def _methods(resources: dict[str, Any]) -> list[dict[str, Any]]:
    """Every method of ``resources`` and of the resources nested in them (``groups.memberships``)."""
    out: list[dict[str, Any]] = []
    for resource in resources.values():
        out += list(resource.get("methods", {}).values())
        out += _methods(resource.get("resources", {}))
    return out


class DiscoverySpec:
    """The methods of a (vendored) discovery document, to check exchanges against."""

    def __init__(self, path: Path) -> None:
        doc = json.loads(path.read_text())
        self.revision = str(doc["revision"])
        self._global = dict(doc.get("parameters", {}))
        self._definitions = {name: _json_schema(s) for name, s in doc["schemas"].items()}
        self._validators: dict[str, jsonschema.Draft202012Validator] = {}
        self._methods: list[_Method] = []
        for method in _methods(doc["resources"]):
            template = "/" + method.get("flatPath", method["path"])
            pattern = re.escape(template)
            for name in re.findall(r"\{(\w+)\}", template):
                pattern = pattern.replace(re.escape("{" + name + "}"), "[^/]+")
            self._methods.append(_Method(
                name=method["id"], http=method["httpMethod"], path=re.compile(pattern),
                params=method.get("parameters", {}),
                request=(method.get("request") or {}).get("$ref"),
                response=(method.get("response") or {}).get("$ref")))

    def _validate(self, ref: str, value: Any) -> list[str]:
        validator = self._validators.get(ref)
        if validator is None:  # built once per schema: the fake checks every exchange
            schema = {"$ref": f"#/definitions/{ref}", "definitions": self._definitions}
            validator = jsonschema.Draft202012Validator(schema)
            self._validators[ref] = validator
        return [f"{ref}{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(value)]

    def check(self, method: str, path: str, query: dict[str, str], body: Any, status: int,
              answer: Any) -> list[str]:
        """Every way the exchange departs from the document (empty when it conforms)."""
        found = [m for m in self._methods if m.http == method and m.path.fullmatch(path)]
        if not found:
            return [f"{method} {path}: no such method in the discovery document"]
        m = found[0]
        problems = []
        for key, value in query.items():
            spec = m.params.get(key) or self._global.get(key)
            if spec is None or spec.get("location") != "query":
                problems.append(f"{m.name}: undocumented query parameter {key}")
            elif spec.get("type") == "boolean" and not _BOOLEAN.fullmatch(value):
                problems.append(f"{m.name}: {key}={value} is not a boolean")
            elif spec.get("type") == "integer":
                if not value.lstrip("-").isdigit():
                    problems.append(f"{m.name}: {key}={value} is not an integer")
                elif "minimum" in spec and int(value) < int(spec["minimum"]):
                    problems.append(f"{m.name}: {key}={value} is below {spec['minimum']}")
                elif "maximum" in spec and int(value) > int(spec["maximum"]):
                    problems.append(f"{m.name}: {key}={value} is above {spec['maximum']}")
        if m.request is not None:
            problems += [f"{m.name} request: {p}" for p in self._validate(m.request, body)]
        elif body is not None:
            problems.append(f"{m.name}: takes no request body")
        if 200 <= status < 300 and m.response is not None:
            problems += [f"{m.name} answer: {p}" for p in self._validate(m.response, answer)]
        return problems
