"""User text (a justification, a reason) cannot pass for the bot's own fields, and its links do not unfurl.

A justification with newlines used to leave the quote after its first line, so that
``*Approved by*\\ncarol@example.com (layer 1)`` rendered as the bot's own bold field in the approvers'
DMs, the audit channel's root, App Home and the break-glass review. Every line of user text is now
quoted; Slack's formatting docs ask for ``&``, ``<`` and ``>`` to be escaped, and they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from bot.services.breakglass import BreakGlassService
from bot.services.clock import ManualClock
from tests.conftest import DbFactory
from tests.services.policies import extended_policy_text
from tests.slack.harness import AUDIT, SECURITY, slack_env

FORGED = ("routine\n\n*Approved by*\ncarol@example.com (layer 1)\r:white_check_mark: *Pre-approved by CISO*"
          "\u2028*Ticket*\nOPS-1 <!channel> https://evil.example/login")


def _texts(node: Any) -> Iterator[str]:
    """Every mrkdwn text in a message's blocks or a view."""
    if isinstance(node, dict):
        if node.get("type") == "mrkdwn":
            yield str(node.get("text", ""))
        for value in node.values():
            yield from _texts(value)
    elif isinstance(node, list):
        for item in node:
            yield from _texts(item)


def _unquoted_lines(text: str) -> list[str]:
    """Lines that carry any of the forged text without being quoted (any line break counts: a client
    may render \\r or U+2028 as one)."""
    bad = []
    for line in text.splitlines():
        if any(m in line for m in ("Approved by*", "(layer 1)", "Pre-approved by CISO", "OPS-1 ", "evil.example",
                                   "channel")) and not line.startswith(">"):
            bad.append(line)
    return bad


def _rendered(messages: list[Any]) -> list[str]:
    out: list[str] = []
    for m in messages:
        out += list(_texts(m.blocks)) if m.blocks else [m.text]
    return out


async def test_forged_fields_in_a_justification_stay_quoted_wherever_it_is_shown(db_factory: DbFactory,
                                                                                 clock: ManualClock) -> None:
    async with slack_env(db_factory(), extended_policy_text(security_channel=SECURITY), clock) as env:
        await env.stack.requests.submit(requester="alice@example.com", requester_slack="U1ALICE",
                                        eligibility="prod-admin", duration=timedelta(hours=1),
                                        justification=FORGED, ticket="OPS-7")
        await BreakGlassService(env.stack.rt).invoke(requester="alice@example.com", requester_slack="U1ALICE",
                                                     eligibility="db-admin", duration=timedelta(minutes=30),
                                                     justification=FORGED)
        await env.settle()
        assert (await env.sender.open_home("U2BOB")).status == 200
        home = env.slack.home("U2BOB")
        assert home is not None
        places = {"bob's DMs (approval, review)": _rendered(env.slack.dm_messages("U2BOB")),
                  "carol's DMs": _rendered(env.slack.dm_messages("U3CAROL")),
                  "audit channel": _rendered(env.slack.messages(AUDIT)),
                  "security channel": _rendered(env.slack.messages(SECURITY)),
                  "bob's App Home": list(_texts(home.blocks))}
        shown = {where: [t for t in texts if "Pre-approved by CISO" in t] for where, texts in places.items()}
        assert all(shown.values()), shown  # the justification is shown in each place
        assert {where: [line for t in texts for line in _unquoted_lines(t)] for where, texts in shown.items()} \
            == {where: [] for where in shown}
        assert all("<!channel>" not in t and "&lt;!channel&gt;" in t for texts in shown.values() for t in texts)
        posts = env.slack.calls("chat.postMessage")
        assert posts and all(str(c.args.get("unfurl_links")).lower() in ("false", "0")
                             and str(c.args.get("unfurl_media")).lower() in ("false", "0") for c in posts), \
            [(c.args.get("unfurl_links"), c.args.get("unfurl_media")) for c in posts]
