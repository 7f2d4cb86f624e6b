"""The request modal's submission, read and checked without I/O: the modal's answer (its ack) depends
only on this, so it can be given before the listener runs (``bot/slack/early_ack.py``) and again, the
same, by the listener itself. What needs the directory or the database is checked after the ack, by
``RequestService.submit`` (which runs these checks again too). One exception: an eligibility whose
ticket must be a Jira issue has it checked before the answer too (``check_form_ticket``, bounded to
2 s), so that an unknown ticket, or Jira down, is an inline error on the ticket field."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.domain.durations import format_duration, parse_duration
from bot.domain.policy import Eligibility
from bot.domain.requests import PolicyViolation
from bot.services.context.tickets import check_ticket
from bot.services.requesting.submission_checks import precheck_submission
from bot.services.runtime import Runtime
from bot.slack import ids, multipick

CONTEXT_KEY = "jitbot_request_form"  # the form as read before the ack, kept in Bolt's context for the listener

# where a PolicyViolation's field is shown in the modal
FIELD_BLOCKS = {"eligibility": ids.B_ELIGIBILITY, "duration": ids.B_DURATION, "justification": ids.B_JUSTIFICATION,
                "ticket": ids.B_TICKET, "starts_at": ids.B_STARTS}


def small_int(raw: str | None, digits: int) -> int | None:
    """A non-negative ASCII integer of at most ``digits`` digits, else None. Button values and form
    fields can be forged: ``str.isdigit`` alone accepts "²" and "١" (``int`` fails on the first), and an
    unbounded number overflows ``timedelta`` and ``datetime``."""
    if raw is None or not (0 < len(raw) <= digits and raw.isascii() and raw.isdigit()):
        return None
    return int(raw)


@dataclass(frozen=True)
class RequestForm:
    """What the person submitted, and the modal's answer: ``errors`` (block id → message) or None."""

    user_id: str
    eligibility: str
    duration: timedelta
    justification: str
    ticket: str | None
    starts_at: datetime | None
    on_behalf: str | None  # a Slack user id: a request made for someone else
    break_glass: Eligibility | None  # the break-glass box ticked, on an eligibility that has the option
    errors: dict[str, str] | None

    def ack_args(self) -> dict[str, Any]:
        """``ack(**form.ack_args())``: the field errors, or the empty answer that closes the modal."""
        return {"response_action": "errors", "errors": self.errors} if self.errors else {}


def read_request_form(rt: Runtime, body: dict[str, Any]) -> RequestForm:
    values = body["view"]["state"]["values"]

    def pick(block: str, action: str) -> str | None:
        v = values.get(block, {}).get(action, {})
        kind = v.get("type")
        raw = ((v.get("selected_option") or {}).get("value") if kind == "static_select"
               else v.get("selected_user") if kind == "users_select"
               else v.get("selected_date_time") if kind == "datetimepicker" else v.get("value"))
        return None if raw in (None, "") else str(raw).replace("\x00", "")  # PostgreSQL refuses NUL

    main = pick(ids.B_ELIGIBILITY, ids.A_ELIGIBILITY) or ""
    checked = values.get(ids.B_BREAKGLASS, {}).get(ids.A_BREAKGLASS, {}).get("selected_options") or []
    glass_ticked = any(o.get("value") == "breakglass" for o in checked)
    # more items picked: the ad-hoc bundle's name, or why not (bot/slack/multipick.py)
    eligibility, items_error = multipick.read_items(rt, main, values, break_glass=glass_ticked)

    def form(errors: dict[str, str] | None, duration_s: int = 0, starts_at: datetime | None = None,
             break_glass: Eligibility | None = None) -> RequestForm:
        return RequestForm(user_id=body["user"]["id"], eligibility=eligibility,
                           duration=timedelta(seconds=duration_s),
                           justification=pick(ids.B_JUSTIFICATION, ids.A_JUSTIFICATION) or "",
                           ticket=pick(ids.B_TICKET, ids.A_TICKET), starts_at=starts_at,
                           on_behalf=pick(ids.B_ON_BEHALF, ids.A_ON_BEHALF), break_glass=break_glass, errors=errors)

    duration_s = small_int(pick(ids.B_DURATION, ids.A_DURATION), 9)
    typed = pick(ids.B_DURATION_TEXT, ids.A_DURATION_TEXT)
    duration_block = ids.B_DURATION if typed is None else ids.B_DURATION_TEXT  # where a duration error goes
    if typed is not None:  # a typed duration replaces the choice
        try:
            duration_s = int(parse_duration(typed[:16]).total_seconds()) if len(typed) <= 16 else None
        except (ValueError, OverflowError):
            duration_s = None
        if duration_s is None or duration_s > 10 ** 9:
            return form({ids.B_DURATION_TEXT: f"{typed[:20]!r} is not a duration; write it like 90m or 2h30m."})
    if duration_s is None:
        return form({ids.B_DURATION: "Pick a duration."})
    starts_raw = pick(ids.B_STARTS, ids.A_STARTS)
    starts_ts = small_int(starts_raw, 11)
    if starts_raw is not None and starts_ts is None:
        return form({ids.B_STARTS: "Pick a valid start time."}, duration_s)
    starts_at = datetime.fromtimestamp(starts_ts, UTC) if starts_ts is not None else None
    if items_error is not None:
        return form({ids.B_ALSO: items_error[:150]}, duration_s, starts_at)
    if glass_ticked:
        glass = _break_glass(rt, form(None, duration_s))
        if glass.errors and ids.B_DURATION in glass.errors and typed is not None:
            glass = replace(glass, errors={ids.B_DURATION_TEXT: glass.errors[ids.B_DURATION]})
        return glass
    submitted = form(None, duration_s, starts_at)
    try:
        # the main pick's rules here; a multi-pick's own after its items are checked (``multipick.check_items``)
        precheck_submission(rt, eligibility=main, duration=submitted.duration,
                            justification=submitted.justification, ticket=submitted.ticket, starts_at=starts_at)
    except PolicyViolation as exc:
        block = FIELD_BLOCKS.get(exc.field or "", ids.B_ELIGIBILITY)
        if block == ids.B_DURATION:
            block = duration_block
        if block == ids.B_TICKET and ids.B_TICKET not in values:  # an eligibility without the field
            block = ids.B_ELIGIBILITY
        return form({block: str(exc)[:150]}, duration_s, starts_at)
    return submitted


def _break_glass(rt: Runtime, submitted: RequestForm) -> RequestForm:
    """The modal's break-glass checkbox: the same rules as ``/jit breakglass``; the justification is the
    required reason."""
    elig = rt.eligibility(submitted.eligibility)
    errors: dict[str, str] | None = None
    if elig is None or elig.break_glass is None:
        errors = {ids.B_BREAKGLASS: "This access has no break-glass option."}
    elif submitted.duration > elig.break_glass.max_duration:
        errors = {ids.B_DURATION: f"Break-glass allows at most {format_duration(elig.break_glass.max_duration)}."}
    elif len(submitted.justification.strip()) < 3:
        errors = {ids.B_JUSTIFICATION: "Say why you are breaking glass."}
    return replace(submitted, break_glass=None if errors else elig, errors=errors)


TICKET_CHECK_S = 2.0  # Slack waits 3 s for the modal's answer


async def check_form_io(rt: Runtime, form: RequestForm, email_of: Callable[[str], Awaitable[str]]) -> RequestForm:
    """The checks with I/O before the modal is answered: the Jira ticket, and a multi-pick's items
    (bot/slack/multipick.py; ``email_of`` maps a Slack user id to their email)."""
    form = await check_form_ticket(rt, form)
    checked: RequestForm = await multipick.check_items(rt, form, email_of)
    return checked


async def check_form_ticket(rt: Runtime, form: RequestForm) -> RequestForm:
    """The Jira ticket check (I/O, bot/services/context/tickets.py) before the modal is answered: a ticket that is
    unknown, in the wrong project or status, or Jira down, is an inline error and nothing is requested."""
    elig = rt.eligibility(form.eligibility)
    if form.errors or form.break_glass is not None or elig is None or elig.ticket_rule is None:
        return form
    try:
        await asyncio.wait_for(check_ticket(rt, elig, form.ticket), TICKET_CHECK_S)
    except PolicyViolation as exc:
        return replace(form, errors={ids.B_TICKET: str(exc)[:150]})
    except TimeoutError:
        return replace(form, errors={ids.B_TICKET: "Jira did not answer in time, so nothing was requested. "
                                                   "Please try again in a minute."})
    return form
