"""The Slack side of a flow and nothing else: a floor for ``bench.throughput``.

    python -m bench.throughput --floor [--flows 600 --concurrency 64]

A Bolt app on the same stack as ``jitbot serve`` (aiohttp, uvloop, one keep-alive session, the same
block builders) that answers the three requests of a flow and makes the Slack calls jitbot makes for
it — ``views.open``; the requester's "waiting" DM and the two approvers' DMs; the approver's ephemeral
reply, both approval messages updated, the requester's "approved" and "You now have" DMs — with no
database, no policy checks, no audit, no outbox and no IdP: what is left in memory is a dict. Its CPU
per flow is what Bolt, slack_sdk and aiohttp alone cost for a flow on this machine, so
``1 / (that)`` bounds what any bot built on them could do on one core.

Run by ``bench.throughput --floor`` as its replica (``python -m bench.slack_floor --port N``, with the
same SLACK_* environment).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot import event_loop
from bot.policy_file import parse_policy
from bot.slack import blocks, ids, modals, request_messages
from bot.slack.client import pooled_respond, web_client
from bot.slack.server import slack_handler

LEADS = ["UL1", "UL2"]


def build(client: AsyncWebClient, secret: str, policy_text: str) -> AsyncApp:
    app = AsyncApp(client=client, signing_secret=secret)
    assert client.session is not None
    pooled_respond(app, client.session)
    eligibilities = parse_policy(policy_text, source="floor", env={}).policy.eligibilities
    emails: dict[str, str] = {}
    dms: dict[str, str] = {}
    requests: dict[str, dict[str, Any]] = {}
    refs: dict[str, list[tuple[str, str]]] = {}
    numbers = itertools.count(1)

    async def email(user: str) -> str:
        if user not in emails:
            emails[user] = (await client.users_info(user=user))["user"]["profile"]["email"]
        return emails[user]

    async def dm(user: str) -> str:
        if user not in dms:
            dms[user] = (await client.conversations_open(users=user))["channel"]["id"]
        return dms[user]

    @app.command(ids.COMMAND)
    async def command(ack: AsyncAck, command: dict[str, Any]) -> None:
        await ack()
        await client.views_open(trigger_id=command["trigger_id"], view=modals.request_modal(eligibilities))

    @app.view(ids.REQUEST_VIEW)
    async def submitted(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        await ack()
        user = body["user"]["id"]
        values = view["state"]["values"]
        justification = values[ids.B_JUSTIFICATION][ids.A_JUSTIFICATION]["value"]
        rid = f"R-{next(numbers):08d}"
        snap = {"id": rid, "eligibility": eligibilities[0].name, "requester": await email(user),
                "requester_slack": user, "duration_s": 3600, "justification": justification, "ticket": None,
                "layers": 1, "approvals": [], "expires_at": None}
        requests[rid] = snap
        text = f"Your request {rid} for {snap['eligibility']} is waiting for approval (layer 1 of 1)."
        await client.chat_postMessage(channel=await dm(user), text=text,
                                      blocks=request_messages.requester_notice(snap, "submitted", text))
        refs[rid] = []
        for lead in LEADS:
            resp = await client.chat_postMessage(
                channel=await dm(lead), text=f"Access request {rid} from {snap['requester']} needs your decision",
                blocks=request_messages.approval_message(snap, 1))
            refs[rid].append((resp["channel"], resp["ts"]))

    @app.action(ids.APPROVE)
    async def approve(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        rid = str(action["value"]).split(":")[0]
        snap = requests.pop(rid)
        approver = await email(body["user"]["id"])
        await respond(response_type="ephemeral", replace_original=False,
                      text=f"You approved {rid}; access is being granted.")
        outcome = f"Approved by {approver}"
        for channel, ts in refs.pop(rid):
            await client.chat_update(channel=channel, ts=ts, text=f"{rid}: {outcome}",
                                     blocks=request_messages.approval_decided(snap, 1, outcome))
        requester = await dm(snap["requester_slack"])
        text = f"Your request {rid} for {snap['eligibility']} was approved by {approver}."
        await client.chat_postMessage(channel=requester, text=text,
                                      blocks=request_messages.requester_notice(snap, "approved", text))
        snap["expires_at"] = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        text = f"You now have {snap['eligibility']} until {blocks.when(snap['expires_at'])}."
        await client.chat_postMessage(channel=requester, text=text,
                                      blocks=request_messages.requester_notice(snap, "active", text))

    return app


async def serve(port: int, policy_path: str) -> None:
    http = aiohttp.ClientSession()
    client = web_client(os.environ["SLACK_BOT_TOKEN"], os.environ["SLACK_API_URL"], http)
    secret = os.environ["SLACK_SIGNING_SECRET"]
    with open(policy_path) as f:
        app = build(client, secret, f.read())
    site_app = web.Application()
    site_app.router.add_post("/slack/events", slack_handler(app, secret))  # bot/slack/server.py's route
    site_app.router.add_get("/healthz", _ok)
    runner = web.AppRunner(site_app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await http.close()


async def _ok(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    event_loop.run(serve(args.port, os.environ["JITBOT_POLICY"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
