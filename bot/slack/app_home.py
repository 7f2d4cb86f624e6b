"""What a person sees of their own access: App Home (their access, their requests, approvals waiting
for them), ``/jit list`` and ``/jit help``. Pure; paged to stay within Slack's limits.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bot.domain.durations import format_duration
from bot.slack import extension_views, ids
from bot.slack.blocks import Block, button, context, cut, esc, md, plain, quoted, section, when, who

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
