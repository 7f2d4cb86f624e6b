"""Plain-text versions of the outbox messages that go to one person (the email notifier's content).

Only person-addressed kinds have an email form: ``approval_request``, ``review_request``, ``requester``
and ``transition_notice``. Channel kinds (``audit``, ``alert``, ``report``) and message updates
(``approval_update``, ``review_update``) stay in Slack. Buttons have no email form: the text says where
in Slack to act (the jitbot Home tab, or a ``/jit`` command). Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bot.domain.durations import format_duration

EMAILABLE = ("approval_request", "review_request", "requester", "transition_notice")


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    body: str


def recipient(kind: str, payload: dict[str, Any]) -> str | None:
    """The email address a person-addressed message is for; None for channel messages and updates."""
    if kind == "approval_request":
        to = payload.get("approver")
    elif kind == "review_request":
        to = payload.get("reviewer")
    elif kind == "requester":
        to = (payload.get("request") or {}).get("requester")
    elif kind == "transition_notice":
        to = payload.get("email")
    else:
        return None
    return str(to).strip().lower() if to and "@" in str(to) else None


def _one_line(text: str, limit: int = 200) -> str:
    """Header-safe: no CR/LF (header injection), bounded length."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _when(iso: str | None) -> str:
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M %Z").strip() if iso else "—"


def _details(snap: dict[str, Any], layer: int | None = None) -> list[str]:
    lines = [f"Request:       {snap['id']}",
             f"Requester:     {snap['requester']}"]
    if snap.get("submitted_by"):
        lines.append(f"Submitted by:  {snap['submitted_by']} (on behalf)")
    access = snap["eligibility"] + (f" — {snap['description']}" if snap.get("description") else "")
    lines += [f"Access:        {access}",
              f"Duration:      {format_duration(timedelta(seconds=int(snap['duration_s'])))}",
              f"Ticket:        {snap.get('ticket') or '—'}"]
    if snap.get("starts_at"):
        lines.append(f"Starts:        {_when(snap['starts_at'])}")
    if layer is not None:
        lines.append(f"Layer:         {layer} of {snap['layers']}")
    approved = [a for a in snap.get("approvals", []) if a.get("decision") == "approve"]
    if approved:
        lines.append("Approved by:   " + ", ".join(f"{a['approver']} (layer {a['layer']})" for a in approved))
    lines += ["", "Justification:", *(f"  {line}" for line in str(snap.get("justification") or "—").splitlines())]
    return lines


FOOTER = ["", "-- ", "jitbot (just-in-time access). This message was sent by email because you prefer it",
          "or because Slack could not deliver it to you."]


def render(kind: str, payload: dict[str, Any]) -> Mail | None:
    """The email for one outbox message, or None when the kind has no email form."""
    to = recipient(kind, payload)
    if to is None:
        return None
    snap: dict[str, Any] = payload.get("request") or {}
    note = payload.get("note")
    lines: list[str] = [note, ""] if note else []
    if kind == "approval_request":
        layer = int(payload["layer"])
        subject = f"Approval needed: {snap['id']} {snap['eligibility']} for {snap['requester']}"
        asks = (f"{snap['requester']} asks to extend {snap.get('parent_id')} by "
                f"{format_duration(timedelta(seconds=int(snap['duration_s'])))}, beyond the access's maximum "
                "(an extension of access that is already active)" if snap.get("kind") == "extension"
                else f"{snap['requester']} requests access")
        lines += [f"{asks} and needs your decision.", "", *_details(snap, layer), "",
                  "To approve or deny, open the jitbot app's Home tab in Slack (Pending approvals)."]
    elif kind == "review_request":
        subject = f"Break-glass review: {snap['id']} {snap['eligibility']} by {snap['requester']}"
        lines += [f"{snap['requester']} took {snap['eligibility']} without approval (break-glass).",
                  "Please review it: was it justified?", "", *_details(snap), "",
                  "To acknowledge or flag it, use the review message from jitbot in Slack."]
    elif kind == "requester":
        event = str(payload.get("event", ""))
        subject = f"{snap['id']} {snap['eligibility']}: {payload.get('text') or event}"
        lines += [str(payload.get("text") or event), "", *_details(snap)]
        if snap.get("expires_at") and event in ("active", "warning", "extended"):
            lines += ["", f"Access ends {_when(snap['expires_at'])}."]
        if event == "warning":
            lines.append("To extend it, use the Extend button in Slack (or request again with /jit).")
        if event in ("active", "warning", "extended"):
            lines.append(f"To end it now: /jit release {snap['id']}")
        if event == "submitted":
            lines.append(f"To cancel it: /jit cancel {snap['id']}")
    else:  # transition_notice
        subject = f"Your standing access ({payload.get('eligibility', '')}) is ending"
        lines += [str(payload.get("text", ""))]
    return Mail(to=to, subject="[jitbot] " + _one_line(subject), body="\n".join([*lines, *FOOTER]) + "\n")
