"""The Okta System Log (``GET /api/v1/logs``) for ``FakeOkta``, strict about what Okta documents.

* ``since``/``until`` are ISO 8601 instants; ``since`` no older than 7 days in this fake (Okta: 90 days).
* Without ``until`` the request is a *polling* query: events come in persistence order and the
  response always carries ``Link: <…after=…>; rel="next"``, even when the page is empty.
* With ``until`` it is *bounded*: ``rel="next"`` only while more events remain.
* ``filter`` supports ``eventType eq "…"`` and ``actor.alternateId eq "…"`` joined by ``and``;
  anything else is ``400 E0000031`` (invalid search criteria), as is an unknown ``after`` cursor.
* ``limit`` is capped at the fake's page size so that paging is exercised.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import web

if TYPE_CHECKING:
    from tests.fakes.idp.okta import FakeOkta

_CLAUSE = re.compile(r'(eventType|actor\.alternateId) eq "([^"\\]*)"')


def _parse_time(value: str) -> datetime | None:
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo else None


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class OktaSystemLog:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []  # in persistence order
        self.requests: list[dict[str, str]] = []
        self._cursors: dict[str, int] = {}  # opaque ``after`` → index of the next event

    def add_sign_in(self, login: str, *, at: datetime, ip: str = "203.0.113.7",
                    agent: str = "Mozilla/5.0 (Macintosh)", event_type: str = "user.session.start",
                    result: str = "SUCCESS") -> str:
        uuid = secrets.token_hex(16)
        self.events.append({
            "uuid": uuid, "published": _iso(at), "eventType": event_type, "version": "0", "severity": "INFO",
            "legacyEventType": "core.user_auth.login_success", "displayMessage": "User login to Okta",
            "actor": {"id": "00u" + secrets.token_hex(8), "type": "User", "alternateId": login,
                      "displayName": login.split("@")[0], "detailEntry": None},
            "client": {"userAgent": {"rawUserAgent": agent, "os": "Mac OS X", "browser": "CHROME"},
                       "zone": "null", "device": "Computer", "id": None, "ipAddress": ip,
                       "geographicalContext": {"city": "Berlin", "state": "Berlin", "country": "Germany",
                                               "postalCode": "10115",
                                               "geolocation": {"lat": 52.52, "lon": 13.40}}},
            "outcome": {"result": result, "reason": None},
            "target": [], "transaction": {"type": "WEB", "id": secrets.token_hex(8), "detail": {}},
            "debugContext": {"debugData": {}},
            "authenticationContext": {"authenticationStep": 0, "externalSessionId": secrets.token_hex(8)},
            "securityContext": {}, "request": {"ipChain": [{"ip": ip}]},
        })
        return uuid

    def _cursor(self, index: int) -> str:
        token = secrets.token_urlsafe(12)
        self._cursors[token] = index
        return token

    async def handle(self, fake: FakeOkta, request: web.Request) -> web.Response:
        q = request.query
        self.requests.append(dict(q))
        since = _parse_time(q["since"]) if "since" in q else datetime.now(UTC) - timedelta(minutes=15)
        until = _parse_time(q["until"]) if "until" in q else None
        if since is None or ("until" in q and until is None):
            return fake._error(400, "Invalid value for 'since' or 'until' parameter.")
        if since < datetime.now(UTC) - timedelta(days=7):
            return fake._error(400, "The 'since' parameter is too far in the past.")
        expr = q.get("filter", "")
        clauses = _CLAUSE.findall(expr)
        if expr and " and ".join(f'{a} eq "{v}"' for a, v in clauses) != expr:
            return fake._error(400, "Invalid search criteria.")
        try:
            limit = min(int(q.get("limit", 100)), fake.page_size)
        except ValueError:
            return fake._error(400, "Invalid limit.")
        start = 0
        if "after" in q:
            if q["after"] not in self._cursors:
                return fake._error(400, "Invalid after cursor.")
            start = self._cursors[q["after"]]

        def wanted(e: dict[str, Any]) -> bool:
            at = _parse_time(e["published"])
            assert at is not None
            fields = {"eventType": e["eventType"], "actor.alternateId": e["actor"]["alternateId"]}
            return (at >= since and (until is None or at < until)
                    and all(fields[a] == v for a, v in clauses))

        matching = [i for i in range(start, len(self.events)) if wanted(self.events[i])]
        page_idx = matching[:limit]
        page = [self.events[i] for i in page_idx]
        next_index = page_idx[-1] + 1 if page_idx else (start if until is not None else len(self.events))
        params = {k: v for k, v in q.items() if k != "after"}
        base = f"{fake.base_url}{request.path}"
        links = [f'<{base}?{urlencode(dict(q))}>; rel="self"']
        if until is None or len(matching) > limit:
            links.append(f'<{base}?{urlencode(params | {"after": self._cursor(next_index)})}>; rel="next"')
        return web.json_response(page, headers={"Link": ", ".join(links)})
