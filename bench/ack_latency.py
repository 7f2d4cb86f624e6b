"""Ack latency of /jit, view_submission and Approve clicks vs a bare Bolt app that only acks.

    python -m bench.ack_latency [--n 300]

Both apps run on the same aiohttp stack in the same process, against the same fake Slack, measured
alternately in one run (ratios, not absolute numbers, are the target: p99 ≤ 1.1× the floor). Which one
goes first alternates (commands, submissions): the app measured right after jitbot's previous request
shares the event loop with that request's work after its ack.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from datetime import timedelta
from typing import Any

from aiohttp import web
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import select

from bench.common import machine, pct
from bot.domain.requests import PolicyViolation
from bot.fakes import FakeSlack, SlackSender
from bot.policy_file import parse_policy
from bot.services.background.worker import Worker
from bot.services.clock import SystemClock
from bot.services.outbox.dispatcher import OutboxDispatcher
from bot.slack import ids
from bot.slack.app import build_app
from bot.slack.notifier import SlackNotifier
from bot.slack.server import web_app
from storage.db import Database
from storage.tables import AccessRequest, ApprovalVote, Grant
from tests.conftest import POLICY
from tests.services.stack import make_stack

TOKEN, SECRET = "xoxb-bench", "bench-secret"
USERS = {"U1ALICE": "alice", "U2BOB": "bob", "U3CAROL": "carol", "U4DAVE": "dave", "U5ERIN": "erin"}


def bare_app(client: AsyncWebClient) -> AsyncApp:
    app = AsyncApp(client=client, signing_secret=SECRET)

    @app.command(ids.COMMAND)
    async def cmd(ack: AsyncAck) -> None:
        await ack()

    @app.view(ids.REQUEST_VIEW)
    async def view(ack: AsyncAck) -> None:
        await ack()

    @app.action(ids.APPROVE)
    async def approve(ack: AsyncAck) -> None:
        await ack()

    return app


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"


async def run(n: int) -> tuple[dict[str, dict[str, list[float]]], list[str]]:
    """Latencies (seconds) by request kind and app, and what did not happen behind jitbot's acks (``_problems``)."""
    with tempfile.TemporaryDirectory() as tmp:
        slack = FakeSlack(token=TOKEN)
        for uid, name in USERS.items():
            slack.add_user(uid, name, email=f"{name}@example.com")
        slack.add_channel("C0AUDIT", "jit-audit")
        async with slack:
            client = AsyncWebClient(token=TOKEN, base_url=slack.url)
            clock = SystemClock()
            loaded = parse_policy(POLICY.replace('"#jit-audit"', "C0AUDIT"), env={})
            stack = await make_stack(Database(f"sqlite+aiosqlite:///{tmp}/ack.db"), loaded, clock)  # type: ignore[arg-type]
            worker = Worker(stack.rt, OutboxDispatcher(stack.rt.db, SlackNotifier(client, stack.rt.db,
                                                                                    audit_channel="C0AUDIT"), clock))
            worker.start(interval=0.5)
            ours = build_app(stack.rt, client=client, signing_secret=SECRET)
            r1, url_ours = await serve(web_app(ours, stack.rt, signing_secret=SECRET))
            bare = bare_app(client)
            r2, url_bare = await serve(bare.web_app(path="/slack/events"))
            s_ours, s_bare = SlackSender(slack, url_ours, SECRET), SlackSender(slack, url_bare, SECRET)
            out: dict[str, dict[str, list[float]]] = {k: {"jitbot": [], "floor": []}
                                                      for k in ("command", "view_submission", "approve")}

            async def timed(coro: Any) -> float:
                t0 = time.perf_counter()
                res = await coro
                assert res.status == 200, res
                return time.perf_counter() - t0

            users = ["U1ALICE", "U2BOB", "U5ERIN"]

            async def top_modal(user: str, before: int) -> Any:
                for _ in range(1000):
                    stack_ = slack.modal_stack(user)
                    if len(stack_) > before:
                        return stack_[-1]
                    await asyncio.sleep(0.005)
                raise TimeoutError("no modal")

            async def make_room(email: str) -> None:
                """One read-only grant per person at a time: the user's previous one is released (and its
                revocation waited for, untimed) before they ask again."""
                for _ in range(1000):
                    async with stack.rt.db.sessions() as s:
                        held = (await s.execute(select(AccessRequest.id, AccessRequest.status).where(
                            AccessRequest.requester == email, AccessRequest.eligibility == "readonly",
                            AccessRequest.status.in_(["approved", "active"])))).all()  # type: ignore[attr-defined]
                    if not held:
                        return
                    for rid, status in held:
                        if status == "active":
                            with contextlib.suppress(PolicyViolation):  # its release is already under way
                                await stack.grants.end_early(request_id=rid, actor=email, reason="released")
                    await asyncio.sleep(0.005)
                raise TimeoutError(f"{email}'s read-only access was not released")

            async def ours_submission(view: Any, i: int) -> None:
                # readonly (auto-approved) submissions; the user's previous one released first
                await make_room(f"{USERS[user]}@example.com")
                old_hash = view.hash
                await s_ours.click_in_view(user, view.id, ids.A_ELIGIBILITY, choice="readonly")
                for _ in range(1000):  # the modal is re-rendered after the ack
                    view = slack.modal_stack(user)[-1]
                    if view.hash != old_hash:
                        break
                    await asyncio.sleep(0.005)
                out["view_submission"]["jitbot"].append(await timed(
                    s_ours.submit_view(user, view.id, {ids.A_JUSTIFICATION: f"bench {i}"})))

            async def bare_submission(view: Any) -> None:
                out["view_submission"]["floor"].append(await timed(
                    s_bare.submit_view(user, view.id, {ids.A_JUSTIFICATION: "x", ids.A_TICKET: "OPS-1"})))

            async def fresh_modal() -> Any:
                before = len(slack.modal_stack(user))
                await s_ours.command(user, "")
                return await top_modal(user, before)

            # Which app is measured first alternates, for the commands every other round and for the
            # submissions every other pair of rounds: a request measured right after jitbot's previous
            # one shares the event loop with that one's work after its ack (the modal opened, a grant and
            # its messages), so a fixed order would put that load on one side only. Both orders come
            # equally often, each after either app's submission.
            for i in range(n):
                user = users[i % 3]
                before = len(slack.modal_stack(user))
                commands = [("jitbot", s_ours), ("floor", s_bare)]
                for name, sender in commands if i % 2 == 0 else commands[::-1]:
                    out["command"][name].append(await timed(sender.command(user, "")))
                view = await top_modal(user, before)
                if (i // 2) % 2 == 0:
                    await ours_submission(view, i)
                    await bare_submission(await fresh_modal())
                else:
                    await bare_submission(view)
                    await ours_submission(await fresh_modal(), i)
            # approvals: prod-admin requests by alice, approved by bob (layer 1) — click the DM buttons
            for i in range(n):
                req = await stack.requests.submit(requester="alice@example.com", eligibility="prod-admin",
                                                  duration=timedelta(hours=1), justification=f"bench {i}",
                                                  ticket="OPS-1")
                # bob's approval message for this request, newest first: a decided one loses its buttons,
                # so counting the messages that still have them (as this loop did) never reached i and
                # every round waited out its 2 s, re-reading all of bob's DMs every 10 ms in this process
                decide = f"decide:{req.id}:1"
                msg = None
                for _ in range(1000):
                    msg = next((m for m in reversed(slack.dm_messages("U2BOB")) if decide in str(m.blocks)), None)
                    if msg is not None:
                        break
                    await asyncio.sleep(0.01)
                if msg is None:
                    raise TimeoutError(f"no approval message for {req.id}")
                ch = slack.im_channel("U2BOB")
                # the bare app first: once jitbot has decided, the message loses its buttons (chat.update)
                out["approve"]["floor"].append(await timed(s_bare.click("U2BOB", ch, msg.ts, ids.APPROVE)))
                out["approve"]["jitbot"].append(await timed(s_ours.click("U2BOB", ch, msg.ts, ids.APPROVE)))
                # The click was acked before its decision ran: wait for bob's vote (untimed), so that the
                # cancel that makes room for the next request never overtakes it.
                for _ in range(1000):
                    if await _votes(stack.rt.db, req.id):
                        break
                    await asyncio.sleep(0.005)
                await stack.requests.cancel(request_id=req.id, by="alice@example.com")
            await worker.stop()
            failed = await _problems(stack.rt.db, n)
            await s_ours.aclose()
            await s_bare.aclose()
            await r1.cleanup()
            await r2.cleanup()
            return out, failed


async def _votes(db: Database, request_id: str) -> list[tuple[str, int, str]]:
    async with db.sessions() as s:
        rows = await s.execute(select(ApprovalVote.approver, ApprovalVote.layer, ApprovalVote.decision)
                               .where(ApprovalVote.request_id == request_id))
        return [tuple(r) for r in rows]  # type: ignore[misc]


async def _problems(db: Database, n: int) -> list[str]:
    """What the acked requests must have done behind their acks: each of jitbot's ``n`` submissions made
    a read-only request, granted at once (no approval layer; a user's earlier one released before they
    ask again), and each Approve click recorded bob's layer-1 approval of its request."""
    async with db.sessions() as s:
        readonly = (await s.execute(select(AccessRequest.status).where(AccessRequest.eligibility == "readonly"))).all()
        granted = (await s.execute(select(Grant.id).join(AccessRequest, AccessRequest.id == Grant.request_id).where(
            AccessRequest.eligibility == "readonly", Grant.granted_at.is_not(None)))).all()  # type: ignore[union-attr]
        approvals = (await s.execute(select(ApprovalVote.request_id).where(
            ApprovalVote.approver == "bob@example.com", ApprovalVote.layer == 1,
            ApprovalVote.decision == "approve"))).all()
    found = []
    if len(readonly) != n or len(granted) != n:
        found.append(f"read-only requests: {sorted(status for (status,) in readonly)}, {len(granted)} granted "
                     f"(want {n} granted)")
    if len(approvals) != n:
        found.append(f"bob's layer-1 approvals: {len(approvals)} (want {n})")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args(argv)
    out, failed = asyncio.run(run(args.n))
    print(f"machine: {machine()}  n={args.n}")
    print(f"{'request':>16} {'jitbot p50':>11} {'p99':>8} {'floor p50':>10} {'p99':>8} {'p99 ratio':>9}")
    for kind, d in out.items():
        a, b = d["jitbot"], d["floor"]
        print(f"{kind:>16} {pct(a, 50) * 1000:>9.2f}ms {pct(a, 99) * 1000:>6.2f}ms {pct(b, 50) * 1000:>8.2f}ms "
              f"{pct(b, 99) * 1000:>6.2f}ms {pct(a, 99) / pct(b, 99):>9.2f}")
    print("checks: " + ("all passed (every submission granted, every click's approval recorded)" if not failed
                        else "FAILED — " + "; ".join(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
