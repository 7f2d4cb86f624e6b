"""Microsoft Entra sign-in logs as jitbot reads them (``GET /auditLogs/signIns``): Graph's timestamp
format for filters and schedules (``graph_time``), an entry's creation time (``created``), and an entry as a
``SignIn`` (``to_sign_in``: where, the client, and the outcome from ``status.errorCode``, 0 being success).
Used by ``connectors/entra.py`` (``sign_ins``), ``connectors/entra_check.py`` and ``connectors/entra_pim.py``.
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from connectors.base import SignIn


def graph_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def created(item: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(item["createdDateTime"]).replace("Z", "+00:00"))


def to_sign_in(item: dict[str, Any], account: str) -> SignIn:
    location = item.get("location") or {}
    where = ", ".join(p for p in (location.get("city"), location.get("countryOrRegion")) if p)
    error = (item.get("status") or {}).get("errorCode")
    client = " / ".join(p for p in (item.get("appDisplayName"), item.get("clientAppUsed")) if p)
    return SignIn(id=str(item["id"]), account=item.get("userPrincipalName") or account, at=created(item),
                  ip=item.get("ipAddress"), client=client or None,
                  outcome=None if error is None else ("SUCCESS" if error == 0 else f"FAILURE {error}"), detail=where)
