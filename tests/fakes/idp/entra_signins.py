"""Microsoft Graph ``GET /v1.0/auditLogs/signIns`` for ``FakeEntra``, strict about the documented query.

* Needs the ``AuditLog.Read.All`` application role (not among ``FakeEntra``'s default roles).
* ``$filter`` must be ``userPrincipalName eq '…'`` and ``createdDateTime ge <UTC instant>`` (unquoted, as
  OData writes DateTimeOffset); anything else is ``400 Request_UnsupportedQuery``.
* Newest first (Graph's default order), ``$top`` capped at the fake's page size, ``@odata.nextLink``
  carrying the whole query (filter included) with a ``$skiptoken``.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import web

if TYPE_CHECKING:
    from tests.fakes.idp.entra import FakeEntra

_FILTER = re.compile(r"userPrincipalName eq '((?:[^']|'')*)' and createdDateTime ge "
                     r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,7})?Z)")


class EntraSignIns:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.requests: list[dict[str, str]] = []

    def add_sign_in(self, upn: str, *, at: datetime, ip: str = "203.0.113.9", error_code: int = 0,
                    app: str = "Azure Portal") -> str:
        sid = str(uuid.uuid4())
        self.items.append({
            "id": sid, "createdDateTime": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "userDisplayName": upn.split("@")[0], "userPrincipalName": upn, "userId": str(uuid.uuid4()),
            "appId": str(uuid.uuid4()), "appDisplayName": app, "ipAddress": ip, "clientAppUsed": "Browser",
            "correlationId": str(uuid.uuid4()), "conditionalAccessStatus": "notApplied", "isInteractive": True,
            "riskDetail": "none", "riskLevelAggregated": "none", "riskLevelDuringSignIn": "none",
            "riskState": "none", "riskEventTypes_v2": [], "resourceDisplayName": "Windows Azure Service Management API",
            "resourceId": str(uuid.uuid4()),
            "status": {"errorCode": error_code, "failureReason": "Other." if error_code else None,
                       "additionalDetails": None},
            "deviceDetail": {"deviceId": "", "displayName": None, "operatingSystem": "Windows 10",
                             "browser": "Edge 120.0.0", "isCompliant": None, "isManaged": None, "trustType": None},
            "location": {"city": "Amsterdam", "state": "Noord-Holland", "countryOrRegion": "NL",
                         "geoCoordinates": {"altitude": None, "latitude": 52.37, "longitude": 4.89}},
            "appliedConditionalAccessPolicies": [],
        })
        return sid

    async def handle(self, fake: FakeEntra, request: web.Request) -> web.Response:
        from tests.fakes.idp.entra import graph_error

        q = request.query
        self.requests.append(dict(q))
        match = _FILTER.fullmatch(q.get("$filter", ""))
        if match is None:
            return graph_error(400, "Request_UnsupportedQuery", "Unsupported or invalid query filter clause.")
        upn = match.group(1).replace("''", "'").lower()
        since = datetime.fromisoformat(match.group(2).replace("Z", "+00:00"))
        found = sorted((i for i in self.items if i["userPrincipalName"].lower() == upn
                        and datetime.fromisoformat(i["createdDateTime"].replace("Z", "+00:00")) >= since),
                       key=lambda i: i["createdDateTime"], reverse=True)
        top = min(int(q.get("$top", 1000)), fake.page_size)
        start = int(q.get("$skiptoken", "0") or 0)
        body: dict[str, Any] = {"@odata.context": f"{fake.graph_url}/$metadata#auditLogs/signIns",
                                "value": found[start:start + top]}
        if start + top < len(found):
            query = {"$filter": q["$filter"], "$top": str(top), "$skiptoken": str(start + top)}
            body["@odata.nextLink"] = f"{fake.base_url}{request.path}?{urlencode(query)}"
        return web.json_response(body)
