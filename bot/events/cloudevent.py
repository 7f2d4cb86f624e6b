"""An audit event as a CloudEvents 1.0 JSON event (https://github.com/cloudevents/spec, JSON format)."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

from storage.tables import Event

TYPE_PREFIX = "dev.jitbot"


def event_type(row: Event) -> str:
    """``dev.jitbot.access.granted`` for a request's events, ``dev.jitbot.system.<kind>`` for the rest."""
    return f"{TYPE_PREFIX}.{'access' if row.request_id else 'system'}.{row.kind}"


def to_cloudevent(row: Event, *, source: str) -> dict[str, Any]:
    """The event as a CloudEvent: ``id`` is the audit event's id (the same on every re-send), ``data``
    carries what the audit log holds, its hash and previous hash included, so that a SIEM can check the
    chain itself."""
    assert row.id is not None
    out: dict[str, Any] = {
        "specversion": "1.0",
        "id": str(row.id),
        "source": source,
        "type": event_type(row),
        "time": row.at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": {"actor": row.actor, "request_id": row.request_id, "kind": row.kind, "from": row.from_state,
                 "to": row.to_state, "detail": row.detail, "hash": row.hash, "prev_hash": row.prev_hash},
    }
    if row.request_id:
        out["subject"] = row.request_id
    return out


def body(cloudevent: dict[str, Any]) -> bytes:
    """The bytes sent (and signed): compact JSON, keys sorted, UTF-8."""
    return json.dumps(cloudevent, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str).encode()
