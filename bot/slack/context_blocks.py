"""How approval context shows in a request's messages: the Jira ticket (key linked, summary, status) and
the on-call shift that passed layers. Pure; every text from Jira is escaped (it is user-written)."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def _esc(text: Any) -> str:
    return str(text or "").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _link_text(text: Any) -> str:
    return _esc(text).replace("|", "¦")  # a "|" would end a link's target early


def ticket_text(snap: dict[str, Any]) -> str:
    """The ticket field: ``<link|KEY> summary (status)`` when Jira was asked, else the reference as typed."""
    ticket = (snap.get("context") or {}).get("ticket")
    if not isinstance(ticket, dict):
        return _esc(snap.get("ticket")) or "—"
    url = str(ticket.get("url") or "")
    key = _link_text(ticket.get("key"))
    head = f"<{_link_text(url)}|{key}>" if url.startswith(("https://", "http://")) else key
    return f"{head} {_esc(ticket.get('summary'))} ({_esc(ticket.get('status'))})"[:1900]


def on_call_text(snap: dict[str, Any]) -> str | None:
    """The on-call field: which layers the requester's PagerDuty shift passed, and when access must end."""
    on_call = (snap.get("context") or {}).get("on_call")
    if not isinstance(on_call, dict) or not on_call.get("layers"):
        return None
    parts = []
    for p in on_call["layers"]:
        where = f"schedule {_esc(p.get('schedule'))}" if p.get("schedule") else "directly"
        parts.append(f"layer {p.get('layer')}: on call ({where}, level {p.get('escalation_level')})")
    if on_call.get("ends_by"):
        parts.append(f"access ends with the shift, {datetime.fromisoformat(on_call['ends_by']):%Y-%m-%d %H:%M} UTC")
    return "\n".join(parts)[:1900]
