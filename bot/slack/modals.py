"""The modals: the /jit request form (only what the person may request) and the reason for a denial.
Pure; read back by bot/slack/request_form.py.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bot.domain.display_limits import MAX_OPTIONS, OPTION_TEXT, menu_description
from bot.domain.durations import format_duration
from bot.domain.policy import Eligibility
from bot.slack import ids
from bot.slack.blocks import Block, context, esc, plain, section

PRESETS = [timedelta(minutes=m) for m in (15, 30, 60, 120, 240, 480, 720, 1440, 2880, 10080)]


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
