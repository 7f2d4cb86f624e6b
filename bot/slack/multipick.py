"""Several eligibilities in one /jit request: the modal's *Also request* list and its checks.

What is picked there, with the main *Access* choice, is one ad-hoc bundle request
(bot/domain/bundles.py ``adhoc``; docs/policy.md "Several items in one request"): its eligibility is the
items' names joined with ``+``, and from there on it is a bundle like any other.

- **The list** (``also_block``): a ``multi_static_select`` of the other eligibilities the person may
  request that can be combined (no bundle, no ticket, no on-call approval). Slack's limits (Block Kit
  reference, "Multi-select menu element"): at most 100 options, option text at most 75 characters;
  ``max_selected_items`` is ``bundles.max_items`` less the main pick. Not shown when the policy's
  ``bundles.max_items`` is 1 or nothing else can be combined. With more than 100 such eligibilities the
  first 100 (the policy's order) are offered; the main single select is as before.
- **Before the answer, without I/O** (``read_items``, from ``read_request_form``): the picked values —
  which a hostile client can forge, so they are checked like anything typed — are counted, de-duplicated,
  bounded in length, and refused with the break-glass box.
- **Before the answer, with I/O** (``check_items``, bounded to 2 s like the Jira ticket check): every
  item must be one the beneficiary may request (the same answer for an unknown name, so a forged value
  learns nothing about the policy), then the combination's rules (``adhoc_refusal``) and the duration
  cap. ``RequestService.submit`` checks it all again (bot/services/requesting/bundles.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from bot.domain.bundles import ADHOC_NAME_MAX, adhoc_members, adhoc_name, adhoc_refusal
from bot.domain.display_limits import MAX_OPTIONS, OPTION_TEXT, menu_description
from bot.domain.policy import Eligibility, Policy
from bot.domain.requests import PolicyViolation
from bot.services.requesting.submission_checks import precheck_submission
from bot.services.runtime import Runtime
from bot.slack import ids
from bot.slack.blocks import plain
from bot.slack.identity import NoEmail
from connectors.base import ConnectorError

ITEMS_CHECK_S = 2.0  # Slack waits 3 s for the modal's answer
NAME_MAX = 64  # an eligibility name is at most 63 characters: a longer value is not one


def combinable(e: Eligibility) -> bool:
    """Whether ``e`` may be one item of several (see ``adhoc_refusal``)."""
    return (not e.bundle and not e.require_ticket and e.auto_approve_when is None
            and all(la.auto_approve_when is None for la in e.approvals))


def also_block(policy: Policy, mine: list[Eligibility], shown: list[Eligibility],
               selected: str | None) -> dict[str, Any] | None:
    """The optional *Also request* input: ``mine`` (what the person may request) that can be combined,
    but the main pick (``selected``, else the first ``shown``, as ``modals.request_modal`` picks it).
    None when there is nothing to add."""
    main = selected if any(e.name == selected for e in shown) else shown[0].name if shown else ""
    if policy.bundles.max_items < 2:
        return None
    others = [e for e in mine if e.name != main and combinable(e)][:MAX_OPTIONS]
    if not others:
        return None
    options = [{"text": plain(e.name, OPTION_TEXT), "value": e.name,
                "description": plain(menu_description(e.description, e.target.kind, e.target.ref), OPTION_TEXT)}
               for e in others]
    return {"type": "input", "block_id": ids.B_ALSO, "optional": True,
            "label": plain("Also request (optional)", 2000),
            "hint": plain("Requested together with the access above as one request: approved once by all of "
                          "their approvers, granted all or nothing. The duration is capped at the shortest "
                          "maximum among the items picked.", 2000),
            "element": {"type": "multi_static_select", "action_id": ids.A_ALSO, "options": options,
                        "max_selected_items": min(policy.bundles.max_items - 1, len(options)),
                        "placeholder": plain("Add more access", 150)}}


def picked(values: dict[str, Any]) -> list[str]:
    """The values picked in the *Also request* list (as sent: not trusted)."""
    chosen = values.get(ids.B_ALSO, {}).get(ids.A_ALSO, {}).get("selected_options") or []
    return [str(o.get("value") or "").replace("\x00", "") for o in chosen if isinstance(o, dict)]


def read_items(rt: Runtime, main: str, values: dict[str, Any], *, break_glass: bool) -> tuple[str, str | None]:
    """(the eligibility the form asks for, an error for the *Also request* field or None). Without
    extra picks the eligibility is ``main`` as before; with them, the ad-hoc bundle's name."""
    also = picked(values)
    if not also:
        return main, None
    names = [main, *also]
    limit = rt.policy.bundles.max_items
    if limit < 2:
        return main, "Requesting several items at once is turned off."
    if break_glass:
        return main, "Break-glass is for one item at a time: remove the other items, or untick break-glass."
    if any(len(n) > NAME_MAX or "+" in n or not n for n in names):
        return main, "You may not request one of the items picked."
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        return main, f"{', '.join(dupes)} is picked more than once."
    if len(names) > limit:
        return main, f"At most {limit} items can be requested together; you picked {len(names)}."
    name = adhoc_name(names)
    if len(name) > ADHOC_NAME_MAX:
        return main, (f"These names are too long together ({ADHOC_NAME_MAX} characters with a + between "
                      "them): pick fewer, or ask for a bundle in the policy.")
    return name, None


async def check_items(rt: Runtime, form: Any, email_of: Callable[[str], Awaitable[str]]) -> Any:
    """``form`` (a ``RequestForm``) with an inline error when its items cannot be requested together by
    its beneficiary (see the module docstring); unchanged when it is not a multi-pick."""
    names = adhoc_members(form.eligibility)
    if form.errors or names is None:
        return form
    try:
        error = await asyncio.wait_for(_item_error(rt, form, names, email_of), ITEMS_CHECK_S)
    except NoEmail:
        return form  # the listener tells the person why (their Slack account has no usable email)
    except (TimeoutError, ConnectorError):
        error = (ids.B_ALSO, "The identity provider did not answer in time, so nothing was requested. "
                             "Please try again in a minute.")
    return replace(form, errors={error[0]: error[1][:150]}) if error else form


_FIELD = {"duration": ids.B_DURATION, "justification": ids.B_JUSTIFICATION, "starts_at": ids.B_STARTS}


async def _item_error(rt: Runtime, form: Any, names: list[str],
                      email_of: Callable[[str], Awaitable[str]]) -> tuple[str, str] | None:
    """(block, message) of the first reason the items cannot be requested together, or None."""
    policy = rt.policy
    email = await email_of(form.on_behalf or form.user_id)
    for n in names:
        e = policy.eligibility(n)
        if e is None or "+" in n or not await rt.directory.contains(policy, e.requestors, email):
            who = "You" if not form.on_behalf else "They"
            return ids.B_ALSO, f"{who} may not request {n[:NAME_MAX]}: remove it."
    refusal = adhoc_refusal(names, {e.name: e for e in policy.eligibilities}, policy.bundles.max_items)
    if refusal:
        return ids.B_ALSO, refusal
    try:  # the bundle's own limits: its duration is capped at the shortest item's maximum
        precheck_submission(rt, eligibility=form.eligibility, duration=form.duration,
                            justification=form.justification, ticket=None, starts_at=form.starts_at)
    except PolicyViolation as exc:
        return _FIELD.get(exc.field or "", ids.B_ALSO), str(exc)
    return None
