"""``jitbot access show REQUEST``: a request's whole story for the person on call — the request, each
grant with its attempts and last error, and every audit event in order. Read-only; the database only."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import col

from bot.cli_support import CliError, run_db
from storage.db import Database
from storage.tables import AccessRequest, Event, Grant

_REQUEST_FIELDS = ("id", "kind", "eligibility", "requester", "submitted_by", "status", "layer", "layers",
                   "duration_s", "justification", "ticket", "created_at", "decided_at", "starts_at", "reason")
_GRANT_FIELDS = ("id", "status", "connector", "target_kind", "target_id", "user_email", "attempts",
                 "last_error", "next_attempt_at", "pre_member", "owns_membership", "granted_at", "expires_at",
                 "ended_at", "end_reason")


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


async def request_story(db: Database, request_id: str) -> dict[str, Any] | None:
    """The request, its grants and its events (oldest first) as plain data; None when there is no such request."""
    async with db.sessions() as session:
        req = await session.get(AccessRequest, request_id)
        if req is None:
            return None
        grants = (await session.execute(select(Grant).where(col(Grant.request_id) == request_id)
                                        .order_by(col(Grant.id)))).scalars().all()
        events = (await session.execute(select(Event).where(col(Event.request_id) == request_id)
                                        .order_by(col(Event.id)))).scalars().all()
    return {
        "request": {f: _plain(getattr(req, f)) for f in _REQUEST_FIELDS},
        "grants": [{f: _plain(getattr(g, f)) for f in _GRANT_FIELDS} for g in grants],
        "events": [{"at": e.at.isoformat(), "kind": e.kind, "actor": e.actor, "from": e.from_state,
                    "to": e.to_state, "detail": e.detail} for e in events],
    }


def _when(value: Any) -> str:
    return str(value)[:19].replace("T", " ") if value else "-"


def render_story(story: dict[str, Any]) -> str:
    """The story as text for a terminal."""
    r = story["request"]
    lines = [f"{r['id']}  {r['eligibility']}  {r['status']}" + (f" (layer {r['layer']}/{r['layers']})"
                                                              if r["status"] == "pending" else ""),
             f"  requester    {r['requester']}" + (f" (submitted by {r['submitted_by']})" if r["submitted_by"] else ""),
             f"  duration     {r['duration_s'] // 60} min"
             + (f", starts {_when(r['starts_at'])}" if r["starts_at"] else ""),
             f"  created      {_when(r['created_at'])}   decided {_when(r['decided_at'])}",
             f"  why          {r['justification']}" + (f" (ticket {r['ticket']})" if r["ticket"] else "")]
    if r["reason"]:
        lines.append(f"  reason       {r['reason']}")
    for g in story["grants"]:
        lines += ["", f"grant {g['id']}  {g['status']}" + (f" ({g['end_reason']})" if g["end_reason"] else ""),
                  f"  target       {g['target_kind']}:{g['target_id']} at {g['connector']} for {g['user_email']}",
                  f"  attempts     {g['attempts']}   next attempt {_when(g['next_attempt_at'])}",
                  f"  member before the grant: {'unknown' if g['pre_member'] is None else g['pre_member']}; "
                  f"owns the membership: {g['owns_membership']}",
                  f"  granted      {_when(g['granted_at'])}   expires {_when(g['expires_at'])}   "
                  f"ended {_when(g['ended_at'])}"]
        if g["last_error"]:
            lines.append(f"  last error   {g['last_error']}")
    lines += ["", "events"]
    for e in story["events"]:
        move = f" {e['from'] or '-'}→{e['to']}" if e["to"] else ""
        detail = ", ".join(f"{k}={v}" for k, v in e["detail"].items())
        lines.append(f"  {_when(e['at'])}  {e['kind']:<18} {e['actor']}{move}" + (f"  [{detail}]" if detail else ""))
    return "\n".join(lines)


def cmd_access_show(args: argparse.Namespace) -> int:
    request_id = args.request.strip().upper()
    story = run_db(args, lambda db: request_story(db, request_id))
    if story is None:
        raise CliError(f"jitbot: no request {request_id}", 1)
    print(json.dumps(story, indent=2) if args.json else render_story(story))
    return 0
