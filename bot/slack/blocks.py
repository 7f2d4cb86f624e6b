"""Block Kit, built by pure functions from plain values. No I/O.

Limits kept here (Slack's documented maxima): section text 3000, field 2000, header 150, button 75,
option text 75, static_select 100 options, modal title 24, ≤100 blocks per view, ≤50 per message.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from bot.domain.approved_for import shorter_choices
from bot.domain.display_limits import MAX_OPTIONS, OPTION_TEXT, menu_description
from bot.domain.durations import format_duration
from bot.domain.policy import Eligibility
from bot.slack import extension_views, ids
from bot.slack.context_blocks import on_call_text, ticket_text

Block = dict[str, Any]

PRESETS = [timedelta(minutes=m) for m in (15, 30, 60, 120, 240, 480, 720, 1440, 2880, 10080)]


def esc(text: str | None) -> str:
    """Escape user text for mrkdwn so it cannot mention people, @channel, or forge links."""
    return (text or "").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def quoted(text: str | None) -> str:
    """User text as a block quote, escaped, every line of it (whatever breaks the line: ``\\r``, U+2028
    …): no line of it can pass for one of the bot's own fields."""
    return "\n".join(">" + line for line in _unanchored(esc(text)).splitlines() or [""])


def _unanchored(text: str) -> str:
    """User text never carries the name of jitbot's audit anchors (bot/services/auditing/audit_anchor.py): a line of
    it copied from the audit channel must not pass for an anchor (non-breaking hyphens instead)."""
    return text.replace("jitbot-audit-anchor", "jitbot\u2011audit\u2011anchor")


def notice(text: str | None) -> str:
    """A text of the bot's own that may end in user text (a reason, a justification): escaped; its first
    line is the bot's sentence, and every further line can only have come from the user, so it is quoted."""
    first, *rest = esc(text).splitlines() or [""]
    return "\n".join([first, *(">" + line for line in rest)])


TRUNCATED = " …(truncated)"


def cut(text: str, limit: int) -> str:
    """Truncate visibly, never past Slack's limit: at most ``limit`` characters."""
    if len(text) <= limit:
        return text
    return text[: limit - len(TRUNCATED)] + TRUNCATED if limit > len(TRUNCATED) else text[:limit]


def chunks(lines: list[str], limit: int) -> list[str]:
    """The lines joined by newlines into as few texts of at most ``limit`` characters as they fit in."""
    out: list[str] = []
    current = ""
    for line in lines:
        line = cut(line, limit)
        if current and len(current) + 1 + len(line) > limit:
            out.append(current)
            current = ""
        current = f"{current}\n{line}" if current else line
    if current:
        out.append(current)
    return out


def plain(text: str, limit: int = 75) -> dict[str, Any]:
    return {"type": "plain_text", "text": cut(text, limit), "emoji": True}


def md(text: str, limit: int = 3000) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": cut(text, limit)}


def section(text: str) -> Block:
    return {"type": "section", "text": md(text)}


def context(text: str) -> Block:
    return {"type": "context", "elements": [md(text, 2000)]}


def button(text: str, action_id: str, value: str, style: str | None = None,
           confirm: dict[str, Any] | None = None) -> dict[str, Any]:
    b: dict[str, Any] = {"type": "button", "text": plain(text), "action_id": action_id, "value": value}
    if style:
        b["style"] = style
    if confirm:
        b["confirm"] = confirm
    return b


def who(email: str, slack_id: str | None) -> str:
    return f"<@{slack_id}>" if slack_id else esc(email)


def when(iso: str | None) -> str:
    if not iso:
        return "—"
    at = datetime.fromisoformat(iso)
    return f"<!date^{int(at.timestamp())}^{{date_short_pretty}} {{time}}|{at:%Y-%m-%d %H:%M} UTC>"


def duration_options(elig: Eligibility) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    choices = sorted({d for d in PRESETS if d <= elig.max_duration} | {elig.max_duration, elig.default})
    options = [{"text": plain(format_duration(d)), "value": str(int(d.total_seconds()))} for d in choices][:100]
    initial = next(o for o in options if o["value"] == str(int(elig.default.total_seconds())))
    return options, initial


def request_modal(eligibilities: list[Eligibility], selected: str | None = None, *,
                  on_behalf: bool = False, also: Block | None = None) -> dict[str, Any]:
    """The /jit modal: only what the user may request; ticket field only where required; an optional
    start time; an optional beneficiary for delegates and admins (``on_behalf``)."""
    if not eligibilities:
        return {"type": "modal", "callback_id": ids.REQUEST_VIEW, "title": plain("Request access", 24),
                "close": plain("Close", 24),
                "blocks": [section("You are not eligible for any access through jitbot. Ask your JIT "
                                   "administrators if you think you should be.")]}
    elig = next((e for e in eligibilities if e.name == selected), eligibilities[0])
    options = [{"text": plain(e.name, OPTION_TEXT), "value": e.name,
                "description": plain(menu_description(e.description, e.target.kind, e.target.ref), OPTION_TEXT)}
               for e in eligibilities][:MAX_OPTIONS]
    initial = next(o for o in options if o["value"] == elig.name)
    durations, initial_duration = duration_options(elig)
    blocks: list[Block] = [
        {"type": "input", "block_id": ids.B_ELIGIBILITY, "dispatch_action": True, "label": plain("Access", 2000),
         "element": {"type": "static_select", "action_id": ids.A_ELIGIBILITY, "options": options,
                     "initial_option": initial}},
        context(esc(elig.description) + f" · up to {format_duration(elig.max_duration)}"
                + (f" · {len(elig.approvals)} approval layer(s)" if elig.approvals else " · approved automatically")),
        *([also] if also is not None else []),  # more items in the same request (bot/slack/multipick.py)
        {"type": "input", "block_id": ids.B_DURATION, "label": plain("For how long", 2000),
         "element": {"type": "static_select", "action_id": ids.A_DURATION, "options": durations,
                     "initial_option": initial_duration}},
        {"type": "input", "block_id": ids.B_DURATION_TEXT, "optional": True,
         "label": plain("Or another duration (optional)", 2000),
         "hint": plain(f"Any duration up to {format_duration(elig.max_duration)}, e.g. 90m or 2h30m; "
                       "it replaces the choice above.", 2000),
         "element": {"type": "plain_text_input", "action_id": ids.A_DURATION_TEXT, "max_length": 16,
                     "placeholder": plain("e.g. 90m", 150)}},
        {"type": "input", "block_id": ids.B_JUSTIFICATION, "label": plain("Why do you need it?", 2000),
         "element": {"type": "plain_text_input", "action_id": ids.A_JUSTIFICATION, "multiline": True,
                     "max_length": 3000}},
    ]
    if elig.require_ticket:
        # With break-glass on offer the field is optional for Slack's client; the server still requires
        # a ticket for a normal request (an inline error), and none for breaking glass.
        blocks.append({"type": "input", "block_id": ids.B_TICKET, "label": plain("Ticket", 2000),
                       "optional": elig.break_glass is not None,
                       "element": {"type": "plain_text_input", "action_id": ids.A_TICKET,
                                   "placeholder": plain("e.g. OPS-1234", 150)}})
    if elig.break_glass is not None:
        bg_max = format_duration(elig.break_glass.max_duration)
        blocks.append({"type": "input", "block_id": ids.B_BREAKGLASS, "optional": True,
                       "label": plain("Emergency", 2000),
                       "hint": plain(f"Grants at once without approval, for at most {bg_max}. Security is alerted "
                                     "and the approvers review it afterwards. Say why above.", 2000),
                       "element": {"type": "checkboxes", "action_id": ids.A_BREAKGLASS, "options": [
                           {"text": plain("Break glass: grant now without approval"), "value": "breakglass"}]}})
    blocks.append({"type": "input", "block_id": ids.B_STARTS, "optional": True,
                   "label": plain("Start later (optional)", 2000),
                   "hint": plain("Leave empty to start as soon as it is approved.", 2000),
                   "element": {"type": "datetimepicker", "action_id": ids.A_STARTS}})
    if on_behalf:
        blocks.append({"type": "input", "block_id": ids.B_ON_BEHALF, "optional": True,
                       "label": plain("On behalf of (optional)", 2000),
                       "hint": plain("You are a delegate: request this access for someone else.", 2000),
                       "element": {"type": "users_select", "action_id": ids.A_ON_BEHALF,
                                   "placeholder": plain("Choose a person", 150)}})
    return {"type": "modal", "callback_id": ids.REQUEST_VIEW, "title": plain("Request access", 24),
            "submit": plain("Request", 24), "close": plain("Cancel", 24), "blocks": blocks,
            "private_metadata": elig.name}


def deny_modal(value: str) -> dict[str, Any]:
    return {"type": "modal", "callback_id": ids.DENY_VIEW, "title": plain("Deny request", 24),
            "submit": plain("Deny", 24), "close": plain("Back", 24), "private_metadata": value,
            "blocks": [{"type": "input", "block_id": ids.B_REASON,
                        "label": plain("Reason (the requester sees it)", 2000),
                        "element": {"type": "plain_text_input", "action_id": ids.A_REASON, "multiline": True,
                                    "max_length": 500}}]}


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


LIST_PAGE = 25  # lines of ``/jit list`` per page: far under Slack's 40,000 characters whatever the names
HOME_PAGE = 15  # active grants and pending requests per App Home page (a view holds at most 100 blocks)


def pages(count: int, size: int) -> int:
    return max(1, -(-count // size))


def access_list(active: list[dict[str, Any]], pending: list[dict[str, Any]], *, page: int = 1) -> str:
    """``/jit list``: the person's access and requests, ``LIST_PAGE`` lines a page."""
    lines = [f"• *{esc(s['eligibility'])}* ({s['id']}) active until {when(s['expires_at'])}" for s in active]
    lines += [f"• *{esc(s['eligibility'])}* ({s['id']}) {s['status']}, layer {s['layer']} of {s['layers']}"
              for s in pending]
    if not lines:
        return "You have no access or requests."
    last = pages(len(lines), LIST_PAGE)
    page = min(max(page, 1), last)
    shown = lines[(page - 1) * LIST_PAGE:page * LIST_PAGE]
    if last > 1:
        more = f" — `/jit list {page + 1}` for the next" if page < last else ""
        shown.append(f"_Page {page} of {last} ({len(lines)} in all){more}_")
    return "\n".join(shown)


def home_view(*, active: list[dict[str, Any]], pending: list[dict[str, Any]],
              approvals: list[tuple[dict[str, Any], int]], page: int = 1) -> dict[str, Any]:
    """App Home: my active access, my pending requests (``HOME_PAGE`` of each a page, with Previous /
    Next), approvals waiting for me, a Request button."""
    last = max(pages(len(active), HOME_PAGE), pages(len(pending), HOME_PAGE))
    page = min(max(page, 1), last)
    first = (page - 1) * HOME_PAGE
    blocks: list[Block] = [
        {"type": "header", "text": plain("Just-in-time access", 150)},
        {"type": "actions", "block_id": "home_actions",
         "elements": [button("Request access", ids.OPEN_REQUEST, "open", "primary")]},
        {"type": "divider"},
        section("*Your active access*" if active else "*Your active access*\nNone right now."),
    ]
    for n, snap in enumerate(active[first:first + HOME_PAGE]):
        blocks.append({"type": "section", "text": md(f"*{esc(snap['eligibility'])}* ({snap['id']}) — ends "
                                                     f"{when(snap.get('expires_at'))}"),
                       "accessory": button("Release", ids.nth(ids.RELEASE, n), snap["id"])})
        if snap.get("kind") != "breakglass":  # more time: at once, or through the approval layers again
            blocks.append({"type": "actions", "block_id": f"home_active:{n}",
                           "elements": [button("Extend", ids.nth(ids.EXTEND, n), snap["id"])]})
    blocks += [{"type": "divider"}, section("*Your pending requests*" if pending else "*Your pending requests*\nNone.")]
    for n, snap in enumerate(pending[first:first + HOME_PAGE]):
        blocks.append({"type": "section", "text": md(f"*{esc(snap['eligibility'])}* ({snap['id']}) — waiting for "
                                                     f"layer {snap['layer']} of {snap['layers']}"),
                       "accessory": button("Cancel", ids.nth(ids.CANCEL, n), snap["id"])})
    blocks += [{"type": "divider"},
               section("*Waiting for your approval*" if approvals else "*Waiting for your approval*\nNothing.")]
    for n, (snap, layer) in enumerate(approvals[:10]):
        value = f"{snap['id']}:{layer}"
        blocks.append(section(f"*{esc(snap['eligibility'])}* for {who(snap['requester'], snap.get('requester_slack'))}"
                              f" — {extension_views.home_prefix(snap)}"
                              f"{format_duration(timedelta(seconds=snap['duration_s']))}, layer {layer} of "
                              f"{snap['layers']}\n{cut(quoted(snap['justification']), 500)}"))
        blocks.append({"type": "actions", "block_id": f"home_decide:{value}", "elements": [
            button("Approve", ids.nth(ids.APPROVE, n), value, "primary"),
            button("Deny", ids.nth(ids.DENY, n), value, "danger")]})
    if last > 1:
        nav = [button("Previous page", ids.nth(ids.HOME_PAGE, 0), str(page - 1))] if page > 1 else []
        nav += [button("Next page", ids.nth(ids.HOME_PAGE, 1), str(page + 1))] if page < last else []
        blocks += [context(f"Page {page} of {last}: {len(active)} active, {len(pending)} pending in all"),
                   {"type": "actions", "block_id": "home_pages", "elements": nav}]
    return {"type": "home", "blocks": blocks[:100]}


HELP = (
    "*/jit* — open the request form\n"
    "*/jit list [PAGE]* — your access and requests, 25 a page\n"
    "*/jit release REQUEST* — end your access now\n"
    "*/jit breakglass ACCESS DURATION REASON…* — emergency access now, without approval (announced and "
    "reviewed)\n"
    "*/jit admin pending | revoke REQUEST | retry REQUEST* — JIT administrators only\n"
    "*/jit help* — this message"
)
