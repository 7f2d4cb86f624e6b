"""The messages about one request, built from its snapshot (``notices.describe``): the approvers' ask and
its decided form, the break-glass review, what the requester is told, the audit channel's root post and
lines. Pure; user text escaped or quoted (``blocks``), within Slack's limits.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bot.domain.approved_for import shorter_choices
from bot.domain.durations import format_duration
from bot.slack import extension_views, ids
from bot.slack.blocks import Block, button, context, cut, esc, md, notice, plain, quoted, section, when, who
from bot.slack.context_blocks import on_call_text, ticket_text


def _extension(snap: dict[str, Any]) -> list[Block]:
    text = extension_views.summary(snap)
    return [section(text)] if text else []


def _request_fields(snap: dict[str, Any], layer: int | None = None) -> list[Block]:
    requester = who(snap['requester'], snap.get('requester_slack'))
    if snap.get("submitted_by"):
        requester += f"\n_on behalf of; submitted by {who(snap['submitted_by'], snap.get('submitted_by_slack'))}_"
    fields = [md(f"*Requester*\n{requester}", 2000),
              md(f"*Access*\n{esc(snap['eligibility'])}{bundle_items(snap)}", 2000),
              md(f"*Duration*\n{format_duration(timedelta(seconds=snap['duration_s']))}", 2000),
              md(f"*Ticket*\n{ticket_text(snap)}", 2000)]
    if on_call_text(snap):
        fields.append(md(f"*On call*\n{on_call_text(snap)}", 2000))
    if snap.get("starts_at"):
        fields.append(md(f"*Starts*\n{when(snap['starts_at'])}", 2000))
    if layer is not None:
        fields.append(md(f"*Layer*\n{layer} of {snap['layers']}", 2000))
    earlier = [a for a in snap.get("approvals", []) if a["decision"] == "approve"]
    if earlier:
        fields.append(md("*Approved by*\n" + ", ".join(f"{esc(a['approver'])} (layer {a['layer']})" for a in earlier),
                         2000))
    return [{"type": "section", "fields": fields},
            section(f"*Justification*\n{cut(quoted(snap['justification']), 2800)}")]


def bundle_items(snap: dict[str, Any]) -> str:
    """A bundle's items (its members as requested), under its name: whoever approves sees every item."""
    items = (snap.get("context") or {}).get("bundle") or []
    return f"\n_bundle of: {esc(', '.join(str(i) for i in items))}_" if items else ""


def approval_message(snap: dict[str, Any], layer: int, note: str | None = None) -> list[Block]:
    """Ask one approver to decide ``layer``; ``note`` says why they are asked again (reminder, escalation)."""
    value = f"{snap['id']}:{layer}"
    return [
        {"type": "header", "text": plain(extension_views.title(snap), 150)},
        *([context(f":alarm_clock: {esc(note)}")] if note else []),
        *_extension(snap),
        *_request_fields(snap, layer),
        {"type": "actions", "block_id": f"decide:{value}", "elements": [
            button("Approve", ids.APPROVE, value, "primary"),
            *approve_for_less(snap, value),
            button("Deny", ids.DENY, value, "danger"),
        ]},
    ]


def approve_for_less(snap: dict[str, Any], value: str) -> list[dict[str, Any]]:
    """Approve ▸ a shorter duration: a menu of the presets shorter than the request's duration as it
    stands (none when nothing is shorter). Each option's value is ``<request>:<layer>:<seconds>``; the
    service refuses any value longer than the duration as it stands (bot/domain/approved_for.py)."""
    choices = shorter_choices(int(snap["duration_s"]))
    if not choices or snap.get("kind") == "extension":  # an extension's extra time is the policy's
        return []
    options = [{"text": plain(f"Approve for {format_duration(c)}"), "value": f"{value}:{int(c.total_seconds())}"}
               for c in choices]
    return [{"type": "static_select", "action_id": ids.APPROVE_FOR, "placeholder": plain("Approve for less…"),
             "options": options}]


def approval_decided(snap: dict[str, Any], layer: int, outcome: str, at: str | None = None) -> list[Block]:
    """A decided layer's message: who decided (``outcome``) and when (``at``, ISO), buttons gone."""
    return [
        {"type": "header", "text": plain(extension_views.title(snap), 150)},
        *_extension(snap),
        *_request_fields(snap, layer),
        context((":white_check_mark: " if outcome.startswith("Approved") else ":no_entry: ") + notice(outcome)
                + (f" · {when(at)}" if at else "")),
    ]


def review_message(snap: dict[str, Any], note: str | None = None) -> list[Block]:
    """Ask a reviewer to acknowledge or flag a break-glass use after the fact."""
    return [
        {"type": "header", "text": plain(f":rotating_light: Break-glass use {snap['id']}", 150)},
        section(f"{who(snap['requester'], snap.get('requester_slack'))} took *{esc(snap['eligibility'])}* without "
                "approval. Please review it: was it justified?"),
        *([context(f":alarm_clock: {esc(note)}")] if note else []),
        *_request_fields(snap),
        {"type": "actions", "block_id": f"review:{snap['id']}", "elements": [
            button("Acknowledge", ids.REVIEW_ACK, snap["id"], "primary"),
            button("Flag", ids.REVIEW_FLAG, snap["id"], "danger", confirm={
                "title": plain("Flag this use?", 100),
                "text": plain("The security channel is alerted to investigate.", 300),
                "confirm": plain("Flag", 30), "deny": plain("Back", 30)}),
        ]},
    ]


def review_decided(snap: dict[str, Any], outcome: str) -> list[Block]:
    return [
        {"type": "header", "text": plain(f":rotating_light: Break-glass use {snap['id']}", 150)},
        *_request_fields(snap),
        context((":white_check_mark: " if outcome.startswith("Acknowledged") else ":triangular_flag_on_post: ")
                + notice(outcome)),
    ]


def requester_notice(snap: dict[str, Any], event: str, text: str) -> list[Block]:
    blocks: list[Block] = [section(notice(text))]
    if event in ("active", "warning", "extended"):
        blocks.append(context(f"Access ends {when(snap.get('expires_at'))}"))
        elements = []
        if event == "warning":
            elements.append(button("Extend", ids.EXTEND, snap["id"], "primary"))
        elements.append(button("Release now", ids.RELEASE, snap["id"], confirm={
            "title": plain("Release access?", 100), "text": plain("Your access ends immediately.", 300),
            "confirm": plain("Release", 30), "deny": plain("Keep it", 30)}))
        blocks.append({"type": "actions", "block_id": f"grant:{snap['id']}", "elements": elements})
    if event == "submitted":
        blocks.append({"type": "actions", "block_id": f"pending:{snap['id']}",
                       "elements": [button("Cancel request", ids.CANCEL, snap["id"])]})
    return blocks


def audit_text(payload: dict[str, Any]) -> str:
    snap = payload.get("request") or {}
    actor = payload.get("actor", "jitbot")
    head = f"*{esc(snap.get('id', ''))}* {esc(snap.get('eligibility', ''))} for {esc(snap.get('requester', ''))}: " \
        if snap else ""
    return cut(f"{head}{notice(payload.get('text') or payload.get('event', ''))} _(by {esc(actor)})_", 3000)


def audit_root(snap: dict[str, Any]) -> list[Block]:
    dur, access = format_duration(timedelta(seconds=snap["duration_s"])), f"*{esc(snap['eligibility'])}*"
    what = (f"asks to extend {esc(snap.get('parent_id'))} ({access}) by {dur}" if extension_views.is_extension(snap)
            else f"requests {access} for {dur}")
    return [section(f":key: *{esc(snap['id'])}* — {who(snap['requester'], snap.get('requester_slack'))} {what}"),
            *_request_fields(snap)[1:]]
