"""Build tests/specs/graph/v1.0.subset.json: the Microsoft Graph v1.0 operations jitbot calls, as OpenAPI 3.0.

    .venv/bin/python -m tests.specs.graph_subset /path/to/cleanMetadata.xml

Source: microsoftgraph/msgraph-metadata ``clean_v10_metadata/cleanMetadata.xml`` at commit
f54f11b60956ea7b185ca0447b2b80805836ec7b (``SOURCE`` below), the CSDL from which Microsoft generates the
published ``openapi/v1.0/openapi.yaml``. (That YAML, several hundred MB, is not held in the snapshot the
subset was cut from; this builder reads its input instead.) Get it with
``git show <commit>:clean_v10_metadata/cleanMetadata.xml`` in a clone of the repository.

Each path of ``OPERATIONS`` is resolved in the CSDL (an entity set or singleton, then keys, navigation
properties, a namespace-qualified bound action, ``$ref``) and written the way Microsoft's converter
(Microsoft.OpenApi.OData, as in msgraph-sdk-powershell ``openApiDocs/v1.0/*.yml``) writes it: the
``$top/$skip/$search/$filter/$count/$orderby/$select/$expand`` query options, ``2XX`` answers, collection
answers as ``<type>CollectionResponse`` (``value`` and ``@odata.nextLink``), an action's parameters as
its request body and its return value as ``{"value": …}``, ``$ref`` bodies as ``{"@odata.id": …}``,
entity types as ``allOf`` of their base type and their own properties, ``@odata.type`` on every object.
Where this builder departs from the converter (each checked by the fakes, so stricter):

* navigation properties are left out of the schemas (Graph returns them only with ``$expand``, which
  jitbot never sends); ``$select``'s items are the property names of the type, its bases and its derived types (Graph
  answers 400 to others);
* a nullable complex or enum property is that type or ``null`` (the converter writes
  ``anyOf: [type, {type: object, nullable: true}]``, which admits any object); numbers that may be
  ``INF``/``NaN`` strings use ``anyOf`` (the converter's ``oneOf`` refuses ``null``);
* the discriminator of a base type maps only the derived types the subset holds.

To add an operation, add its method and path to ``OPERATIONS`` (paths as the
converter names them: ``/{set}/{<type>-id}/…``, actions as ``microsoft.graph.<name>``) and run the
script; functions (``microsoft.graph.f(…)``) are not supported yet.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

SOURCE = ("microsoftgraph/msgraph-metadata", "f54f11b60956ea7b185ca0447b2b80805836ec7b",
          "clean_v10_metadata/cleanMetadata.xml")
OUT = Path(__file__).parent / "graph" / "v1.0.subset.json"

# (method, path) of every Graph call connectors/entra.py and entra_pim.py make, and the ones tests/fakes/idp/entra.py
# and entra_pim.py serve
OPERATIONS: list[tuple[str, str]] = [
    ("GET", "/users"),                                                   # find_user, check
    ("GET", "/users/{user-id}"),                                         # terminate_sessions
    ("GET", "/users/{user-id}/memberOf"),                                # served by the fake, not called
    ("POST", "/users/{user-id}/microsoft.graph.checkMemberGroups"),      # groups_of
    ("POST", "/users/{user-id}/microsoft.graph.revokeSignInSessions"),   # terminate_sessions
    ("GET", "/groups"),                                                  # _group_id, list_groups, check
    ("GET", "/groups/{group-id}/members"),                               # list_members, is_member
    ("POST", "/groups/{group-id}/members/$ref"),                         # grant
    ("DELETE", "/groups/{group-id}/members/{directoryObject-id}/$ref"),  # revoke
    ("GET", "/auditLogs/signIns"),                                       # sign_ins, check
    # connectors/entra_pim.py (PIM for Groups, the expiry backstop) and tests/fakes/idp/entra_pim.py
    ("POST", "/identityGovernance/privilegedAccess/group/assignmentScheduleRequests"),  # grant, move_expiry, revoke
    ("GET", "/identityGovernance/privilegedAccess/group/assignmentScheduleRequests"),   # check
]

EDM = "{http://docs.oasis-open.org/odata/ns/edm}"
_DATE_TIME = ("^[0-9]{4,}-(0[1-9]|1[012])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
              "([.][0-9]{1,12})?(Z|[+-][0-9][0-9]:[0-9][0-9])$")
_NUMERIC = {"$ref": "#/components/schemas/ReferenceNumeric"}
PRIMITIVES: dict[str, dict[str, Any]] = {
    "Edm.String": {"type": "string"},
    "Edm.Boolean": {"type": "boolean"},
    "Edm.Byte": {"type": "number", "format": "uint8"},
    "Edm.SByte": {"type": "number", "format": "int8"},
    "Edm.Int16": {"type": "number", "format": "int16"},
    "Edm.Int32": {"type": "number", "format": "int32"},
    "Edm.Int64": {"type": "number", "format": "int64"},
    "Edm.Double": {"anyOf": [{"type": "number", "format": "double"}, {"type": "string"}, _NUMERIC]},
    "Edm.Single": {"anyOf": [{"type": "number", "format": "float"}, {"type": "string"}, _NUMERIC]},
    "Edm.Decimal": {"anyOf": [{"type": "number", "format": "decimal"}, {"type": "string"}, _NUMERIC]},
    "Edm.Guid": {"type": "string", "format": "uuid",
                 "pattern": "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"},
    "Edm.DateTimeOffset": {"type": "string", "format": "date-time", "pattern": _DATE_TIME},
    "Edm.Date": {"type": "string", "format": "date",
                 "pattern": "^[0-9]{4,}-(0[1-9]|1[012])-(0[1-9]|[12][0-9]|3[01])$"},
    "Edm.TimeOfDay": {"type": "string", "format": "time",
                      "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]([.][0-9]{1,12})?$"},
    "Edm.Duration": {"type": "string", "format": "duration",
                     "pattern": "^-?P([0-9]+D)?(T([0-9]+H)?([0-9]+M)?([0-9]+([.][0-9]+)?S)?)?$"},
    "Edm.Binary": {"type": "string", "format": "base64url"},
    "Edm.Stream": {"type": "string", "format": "base64url"},
}
_QUERY = {
    "top": {"name": "$top", "in": "query", "description": "Show only the first n items", "style": "form",
            "explode": False, "schema": {"minimum": 0, "type": "integer"}},
    "skip": {"name": "$skip", "in": "query", "description": "Skip the first n items", "style": "form",
             "explode": False, "schema": {"minimum": 0, "type": "integer"}},
    "search": {"name": "$search", "in": "query", "description": "Search items by search phrases",
               "style": "form", "explode": False, "schema": {"type": "string"}},
    "filter": {"name": "$filter", "in": "query", "description": "Filter items by property values",
               "style": "form", "explode": False, "schema": {"type": "string"}},
    "count": {"name": "$count", "in": "query", "description": "Include count of items", "style": "form",
              "explode": False, "schema": {"type": "boolean"}},
}


class Model:
    """The CSDL's types, entity sets, singletons and bound actions, by namespace-qualified name."""

    def __init__(self, path: Path) -> None:
        root = ET.parse(path).getroot()
        self.types: dict[str, ET.Element] = {}
        self.actions: dict[str, list[ET.Element]] = {}
        self.container: dict[str, tuple[str, bool]] = {}  # entity set or singleton → (entity type, is a set)
        self._alias: dict[str, str] = {}
        schemas = list(root.iter(f"{EDM}Schema"))
        for schema in schemas:
            ns = schema.get("Namespace", "")
            self._alias[schema.get("Alias") or ns] = ns
        for schema in schemas:
            ns = schema.get("Namespace", "")
            for node in schema:
                tag, name = node.tag.removeprefix(EDM), node.get("Name", "")
                if tag in ("EntityType", "ComplexType", "EnumType"):
                    self.types[f"{ns}.{name}"] = node
                elif tag == "Action" and node.get("IsBound") == "true":
                    self.actions.setdefault(f"{ns}.{name}", []).append(node)
                elif tag == "EntityContainer":
                    for member in node:
                        kind = member.tag.removeprefix(EDM)
                        if kind in ("EntitySet", "Singleton"):
                            self.container[member.get("Name", "")] = (self.qualify(
                                member.get("EntityType") or member.get("Type") or ""), kind == "EntitySet")

    def qualify(self, name: str) -> str:
        if name.startswith(("Collection(", "Edm.")):
            return name
        prefix, _, short = name.rpartition(".")
        return f"{self._alias.get(prefix, prefix)}.{short}"

    def base(self, name: str) -> str | None:
        base = self.types[name].get("BaseType")
        return self.qualify(base) if base else None

    def lineage(self, name: str) -> list[str]:
        out: list[str] = [name]
        while (b := self.base(out[-1])) is not None:
            out.append(b)
        return out

    def member(self, type_name: str, name: str) -> ET.Element | None:
        """A property or navigation property of the type or one of its bases."""
        for t in self.lineage(type_name):
            for node in self.types[t]:
                if node.get("Name") == name and node.tag.removeprefix(EDM) in ("Property", "NavigationProperty"):
                    return node
        return None

    def names(self, type_name: str) -> list[str]:
        """The properties a ``$select`` on the type may name: its own, its bases', and those of the types
        derived from it (a collection of a base type, such as a group's members, holds derived ones)."""
        kinds = ("Property", "NavigationProperty")
        types = [t for t in self.types if type_name in self.lineage(t)] if type_name in self.types else []
        return sorted({str(n.get("Name")) for t in {*self.lineage(type_name), *types} for n in self.types[t]
                       if n.tag.removeprefix(EDM) in kinds})

    def action(self, name: str, binding: str) -> ET.Element:
        lineage = self.lineage(binding)
        for node in self.actions.get(name, []):
            bound = self.qualify(node.findall(f"{EDM}Parameter")[0].get("Type", ""))
            if bound in lineage:
                return node
        raise KeyError(f"no action {name} bound to {binding}")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


class Builder:
    def __init__(self, model: Model) -> None:
        self.m = model
        self.schemas: dict[str, Any] = {
            "ReferenceNumeric": {"enum": ["-INF", "INF", "NaN"], "type": "string", "nullable": True},
            "BaseCollectionPaginationCountResponse": {
                "title": "Base collection pagination and count responses", "type": "object",
                "properties": {"@odata.count": {"type": "integer", "format": "int64", "nullable": True},
                               "@odata.nextLink": {"type": "string", "nullable": True}}},
            "ReferenceCreate": {"type": "object", "properties": {"@odata.id": {"type": "string"}},
                                "additionalProperties": {"type": "object"}},
        }
        self.responses: dict[str, Any] = {}
        self._pending: list[str] = []

    # -- schemas --------------------------------------------------------------------------------
    def type_schema(self, type_name: str, nullable: bool) -> dict[str, Any]:
        if type_name.startswith("Collection("):
            inner = self.m.qualify(type_name[len("Collection("):-1])
            return {"type": "array", "items": self.type_schema(inner, nullable)}
        if type_name in ("Edm.Untyped", "Edm.PrimitiveType"):
            return {}
        if type_name.startswith("Edm."):
            schema = dict(PRIMITIVES[type_name])
            if nullable and "type" in schema:
                schema["nullable"] = True
            elif nullable:  # the number or string branch admits null
                schema = {"anyOf": [{**b, "nullable": True} if "type" in b else b for b in schema["anyOf"]]}
            return schema
        self.want(type_name)
        return {**_ref(type_name), "nullable": True} if nullable else _ref(type_name)

    def want(self, type_name: str) -> None:
        if type_name not in self.schemas and type_name not in self._pending:
            self._pending.append(type_name)

    def finish(self) -> None:
        while self._pending:
            name = self._pending.pop()
            if name not in self.schemas:
                self.schemas[name] = {}  # claimed before recursing
                self.schemas[name] = self._schema(name)
        self._discriminators()

    def _schema(self, name: str) -> dict[str, Any]:
        node = self.m.types[name]
        kind, short = node.tag.removeprefix(EDM), name.rpartition(".")[2]
        if kind == "EnumType":
            return {"title": short, "enum": [str(e.get("Name")) for e in node.findall(f"{EDM}Member")],
                    "type": "string"}
        props: dict[str, Any] = {}
        for p in node.findall(f"{EDM}Property"):
            props[str(p.get("Name"))] = self.type_schema(self.m.qualify(p.get("Type", "")),
                                                         p.get("Nullable") != "false")
        base = self.m.base(name)
        if base is None:
            props["@odata.type"] = {"type": "string"}
            return {"title": short, "type": "object", "properties": props}
        self.want(base)
        if "@odata.type" not in props:
            props["@odata.type"] = {"type": "string", "default": f"#{name}"}
        return {"allOf": [_ref(base), {"title": short, "type": "object", "properties": props}]}

    def _discriminators(self) -> None:
        """A base type's ``@odata.type`` mapping to the derived types the subset holds."""
        for name in list(self.schemas):
            if name not in self.m.types:
                continue
            derived = sorted(d for d in self.schemas if d in self.m.types and self.m.base(d) == name)
            if derived and self.m.types[name].tag.removeprefix(EDM) == "EntityType":
                self.schemas[name]["discriminator"] = {
                    "propertyName": "@odata.type",
                    "mapping": {f"#{d}": f"#/components/schemas/{d}" for d in derived}}

    def collection(self, type_name: str) -> dict[str, str]:
        name = f"{type_name}CollectionResponse"
        if name not in self.schemas:
            self.schemas[name] = {"title": f"Collection of {type_name.rpartition('.')[2]}", "type": "object",
                                  "allOf": [_ref("BaseCollectionPaginationCountResponse"),
                                            {"type": "object", "properties": {
                                                "value": {"type": "array", "items": self.type_schema(
                                                    type_name, False)}}}]}
            self.responses[name] = {"description": "Retrieved collection", "content": {
                "application/json": {"schema": _ref(name)}}}
        return {"$ref": f"#/components/responses/{name}"}

    # -- paths -----------------------------------------------------------------------------------
    def operation(self, method: str, path: str) -> dict[str, Any]:
        segments = path.strip("/").split("/")
        type_name, many = self.m.container[segments[0]]
        params: list[dict[str, Any]] = []
        ref = False
        action: ET.Element | None = None
        for seg in segments[1:]:
            if seg == "$ref":
                ref = True
            elif seg.startswith("{"):
                key = seg.strip("{}")
                params.append({"name": key, "in": "path", "description": f"The unique identifier of "
                               f"{key.removesuffix('-id')}", "required": True, "style": "simple",
                               "schema": {"type": "string"}, "x-ms-docs-key-type": key.removesuffix("-id")})
                many = False
            elif seg.startswith("microsoft.graph."):
                action = self.m.action(seg, type_name)
            else:
                nav = self.m.member(type_name, seg)
                if nav is None or nav.tag.removeprefix(EDM) != "NavigationProperty":
                    raise KeyError(f"{path}: {type_name} has no navigation property {seg}")
                t = nav.get("Type", "")
                many = t.startswith("Collection(")
                type_name = self.m.qualify(t[len("Collection("):-1] if many else t)
        op: dict[str, Any] = {"operationId": f"{method.lower()} {path}"}
        if action is not None:
            op.update(self._action(action))
        elif ref and method == "POST":
            op["requestBody"] = {"$ref": "#/components/requestBodies/refPostBody"}
            op["responses"] = {"2XX": {"description": "Success"}}
        elif ref and method == "DELETE":
            params.append({"name": "If-Match", "in": "header", "description": "ETag", "style": "simple",
                           "schema": {"type": "string"}})
            op["responses"] = {"2XX": {"description": "Success"}}
        elif method == "GET" and many:
            params += [{"name": "ConsistencyLevel", "in": "header", "style": "simple", "schema": {"type": "string"},
                        "description": "Indicates the requested consistency level."}]
            params += [{"$ref": f"#/components/parameters/{p}"} for p in ("top", "skip", "search", "filter", "count")]
            params += [self._list_option("$orderby", "Order items by property values", None),
                       self._list_option("$select", "Select properties to be returned", type_name),
                       self._list_option("$expand", "Expand related entities", None)]
            op["responses"] = {"2XX": self.collection(type_name)}
        elif method == "GET":
            params += [self._list_option("$select", "Select properties to be returned", type_name),
                       self._list_option("$expand", "Expand related entities", None)]
            op["responses"] = {"2XX": {"description": "Retrieved entity", "content": {
                "application/json": {"schema": self.type_schema(type_name, False)}}}}
        elif method == "POST" and many:
            op["requestBody"] = {"description": "New entity", "required": True, "content": {
                "application/json": {"schema": self.type_schema(type_name, False)}}}
            op["responses"] = {"2XX": {"description": "Created entity", "content": {
                "application/json": {"schema": self.type_schema(type_name, False)}}}}
        else:
            raise KeyError(f"{method} {path}: not an operation this builder writes")
        if params:
            op["parameters"] = params
        return op

    def _list_option(self, name: str, description: str, type_name: str | None) -> dict[str, Any]:
        items: dict[str, Any] = {"type": "string"}
        if type_name is not None:
            items["enum"] = self.m.names(type_name)
        return {"name": name, "in": "query", "description": description, "style": "form", "explode": False,
                "schema": {"uniqueItems": True, "type": "array", "items": items}}

    def _action(self, node: ET.Element) -> dict[str, Any]:
        op: dict[str, Any] = {}
        args = node.findall(f"{EDM}Parameter")[1:]
        if args:
            op["requestBody"] = {"description": "Action parameters", "required": True, "content": {
                "application/json": {"schema": {"type": "object", "properties": {
                    str(a.get("Name")): self.type_schema(self.m.qualify(a.get("Type", "")),
                                                         a.get("Nullable") != "false") for a in args},
                    "additionalProperties": {"type": "object"}}}}}
        returns = node.find(f"{EDM}ReturnType")
        if returns is None:
            op["responses"] = {"2XX": {"description": "Success"}}
        else:
            value = self.type_schema(self.m.qualify(returns.get("Type", "")), returns.get("Nullable") != "false")
            op["responses"] = {"2XX": {"description": "Success", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"value": value}, "additionalProperties": {"type": "object"}}}}}}
        return op


def build(csdl: Path, operations: list[tuple[str, str]] = OPERATIONS) -> dict[str, Any]:
    b = Builder(Model(csdl))
    paths: dict[str, dict[str, Any]] = {}
    for method, path in operations:
        paths.setdefault(path, {})[method.lower()] = b.operation(method, path)
    b.finish()
    repo, commit, file = SOURCE
    return {
        "openapi": "3.0.4",
        "info": {"title": "Microsoft Graph v1.0 (the operations jitbot calls)", "version": "v1.0",
                 "x-source": f"https://github.com/{repo}/blob/{commit}/{file}",
                 "x-generated-by": "tests/specs/graph_subset.py"},
        "servers": [{"url": "https://graph.microsoft.com/v1.0/"}],
        "paths": paths,
        "components": {"schemas": dict(sorted(b.schemas.items())), "responses": b.responses,
                       "parameters": _QUERY, "requestBodies": {"refPostBody": {
                           "description": "New navigation property ref value", "required": True,
                           "content": {"application/json": {"schema": _ref("ReferenceCreate")}}}}},
    }


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__.splitlines()[2])
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(build(Path(sys.argv[1])), indent=1, sort_keys=False) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
