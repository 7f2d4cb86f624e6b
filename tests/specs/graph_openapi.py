"""Holding a Microsoft Graph exchange to the v1.0 subset vendored under tests/specs/graph.

``GraphSpec`` is ``OpenApiSpec`` (tests/specs/openapi.py) with the discriminator (``@odata.type``) in force,
plus what Graph's OpenAPI leaves to the OData protocol it implements:

* paths are under ``/v1.0`` (the document's server URL), stripped before matching;
* a bound action may be called without its namespace (``/users/{id}/checkMemberGroups``, the form every
  Graph reference page shows) as well as qualified (``/microsoft.graph.checkMemberGroups``, the form
  the OpenAPI writes): both reach the same operation;
* ``$skiptoken`` is accepted on a collection: Graph writes it into the ``@odata.nextLink`` it returns
  (Graph docs, "Paging Microsoft Graph data in your app"), and a client follows the link as it is;
* a JSON answer's top-level ``@odata.context`` (the context URL, control information OData JSON Format
  4.01 §4.5 puts on every answer) is not held to the schema, which does not declare it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.specs.openapi import _UNSET, OpenApiSpec

GRAPH_V1 = Path(__file__).parent / "graph" / "v1.0.subset.json"
_NAMESPACE = "microsoft.graph."


class GraphSpec(OpenApiSpec):
    def __init__(self, path: Path = GRAPH_V1) -> None:
        super().__init__(path, discriminators=True)
        self._actions = {seg.removeprefix(_NAMESPACE) for template in self.doc["paths"]
                         for seg in template.split("/") if seg.startswith(_NAMESPACE)}

    def check(self, method: str, path: str, query: dict[str, str], status: int, answer: Any, *,
              body: Any = _UNSET) -> list[str]:
        segments = path.removeprefix("/v1.0").split("/")
        path = "/".join(_NAMESPACE + s if s in self._actions else s for s in segments)
        query = {k: v for k, v in query.items() if k != "$skiptoken"}
        if isinstance(answer, dict):
            answer = {k: v for k, v in answer.items() if k != "@odata.context"}
        return super().check(method, path, query, status, answer, body=body)
