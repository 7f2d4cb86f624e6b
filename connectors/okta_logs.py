"""Reading Okta's System Log answers: timestamps as Okta takes them, sign-in events, and the ``after``
cursor of a ``rel="next"`` link."""
from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlparse

from connectors.base import SignIn

_NEXT_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="next"')


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sign_in(event: Any, account: str) -> SignIn:
    client = getattr(event, "client", None)
    agent = getattr(getattr(client, "user_agent", None), "raw_user_agent", None)
    geo = getattr(client, "geographical_context", None)
    where = ", ".join(p for p in (getattr(geo, "city", None), getattr(geo, "country", None)) if p)
    outcome = getattr(getattr(event, "outcome", None), "result", None)
    published = event.published if isinstance(event.published, datetime) else datetime.now(UTC)
    return SignIn(id=str(event.uuid), account=getattr(event.actor, "alternate_id", None) or account,
                  at=published if published.tzinfo else published.replace(tzinfo=UTC),
                  ip=getattr(client, "ip_address", None), client=agent,
                  outcome=str(getattr(outcome, "value", outcome)) if outcome else None, detail=where)


def next_cursor(headers: Any) -> str | None:
    links = headers.getall("Link", []) if hasattr(headers, "getall") else [headers.get("Link", "")]
    for link in links:
        for url in _NEXT_LINK.findall(link or ""):
            after: list[str] = parse_qs(urlparse(url).query).get("after", [])
            if after:
                return after[0]
    return None
