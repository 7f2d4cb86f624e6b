"""Commands, button clicks and the request modal's submissions are answered as soon as the request is
verified, not after Bolt's next 10 ms look for the listener's ack (bot/slack/early_ack.py): the modal's
field errors are worked out without I/O before its listener runs (bot/slack/request_form.py). Other
modals (the deny reason) still wait for their listener's ack. Runs the app as production does
(``process_before_response`` off), through the real Bolt app and the fake Slack."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from slack_bolt.listener import asyncio_runner
from sqlalchemy import select

from bot.fakes import SlackSender
from bot.services.clock import ManualClock
from bot.slack import ids
from storage.tables import AccessRequest
from tests.conftest import POLICY, DbFactory
from tests.slack.harness import SECRET, slack_env


class _RunnerAsyncio:
    """The listener runner's ``asyncio``, recording the sleeps of its ack poll."""

    def __init__(self, polls: list[float]) -> None:
        self.polls = polls

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def sleep(self, delay: float, result: Any = None) -> Any:
        self.polls.append(delay)
        return await asyncio.sleep(delay, result)


async def _until(cond: Callable[[], Any]) -> None:
    """Until ``cond()`` (a value, or an awaitable of one) is true; at most 10 s."""
    async with asyncio.timeout(10):
        while not await _value(cond()):
            await asyncio.sleep(0.01)


async def _value(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def test_commands_and_clicks_are_answered_without_waiting_for_a_poll(
        db_factory: DbFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    polls: list[float] = []
    monkeypatch.setattr(asyncio_runner, "asyncio", _RunnerAsyncio(polls))
    async with slack_env(db_factory(), POLICY, clock, process_before_response=False) as env:
        # /jit: answered at once; the listener still runs after the answer (the modal opens)
        assert (await env.sender.command("U1ALICE", "")).status == 200
        assert polls == []
        await _until(lambda: env.slack.modal_stack("U1ALICE"))
        view = env.slack.modal_stack("U1ALICE")[-1]
        before = view.hash  # the fake updates the view in place
        # picking an eligibility is a block action too: answered at once, the modal re-rendered after
        assert (await env.sender.click_in_view("U1ALICE", view.id, ids.A_ELIGIBILITY, choice="readonly")).status == 200
        assert polls == []
        await _until(lambda: env.slack.modal_stack("U1ALICE")[-1].hash != before)

        # the request modal: a field error comes back at once, in the answer, and nothing is submitted
        view = env.slack.modal_stack("U1ALICE")[-1]
        refused = await env.sender.submit_view("U1ALICE", view.id, {ids.A_JUSTIFICATION: "x" * 600})
        assert refused.body["response_action"] == "errors" and ids.B_JUSTIFICATION in refused.body["errors"]
        # its submission: answered at once too (the modal closes); the request is made after the answer
        assert (await env.sender.submit_view("U1ALICE", view.id, {ids.A_JUSTIFICATION: "why"})).status == 200
        assert polls == []
        assert env.slack.modal_stack("U1ALICE") == []

        async def submitted() -> list[str]:
            async with env.stack.rt.db.sessions() as session:
                rows = await session.execute(select(AccessRequest.justification))
                return [j for (j,) in rows]

        await _until(submitted)
        assert await submitted() == ["why"]

        # Approve: answered at once; the decision is still the listener's, checked on the server
        req = await env.stack.requests.submit(requester="alice@example.com", eligibility="prod-admin",
                                              duration=timedelta(hours=1), justification="deploy", ticket="OPS-1")
        await env.settle()
        ask = next(m for m in env.slack.dm_messages("U2BOB") if f"decide:{req.id}:1" in str(m.blocks))
        channel = env.slack.im_channel("U2BOB")
        assert channel is not None
        assert (await env.sender.click("U2BOB", channel, ask.ts, ids.APPROVE)).status == 200
        assert polls == []

        async def layer_moved() -> bool:
            async with env.stack.rt.db.sessions() as session:
                from bot.services.requesting.request_rows import load_request

                return (await load_request(session, req.id)).layer == 2

        await _until(layer_moved)

        # the deny reason modal is answered by its listener (its answer needs the decision): Bolt's poll
        await env.settle()
        carol = env.slack.im_channel("U3CAROL")
        ask = next(m for m in env.slack.dm_messages("U3CAROL") if f"decide:{req.id}:2" in str(m.blocks))
        assert carol is not None
        assert (await env.sender.click("U3CAROL", carol, ask.ts, ids.DENY)).status == 200
        await _until(lambda: env.slack.modal_stack("U3CAROL"))
        polls.clear()
        deny = env.slack.modal_stack("U3CAROL")[-1]
        assert (await env.sender.submit_view("U3CAROL", deny.id, {ids.A_REASON: "freeze"})).status == 200
        assert polls and set(polls) == {0.01}


async def test_a_forged_command_is_still_refused_and_runs_nothing(
        db_factory: DbFactory, clock: ManualClock) -> None:
    async with slack_env(db_factory(), POLICY, clock, process_before_response=False) as env:
        forged = SlackSender(env.slack, env.sender.bot_url, SECRET + "-wrong")
        try:
            assert (await forged.command("U1ALICE", "")).status == 401
        finally:
            await forged.aclose()
        await asyncio.sleep(0.05)  # a listener started by mistake would have opened the modal by now
        assert env.slack.modal_stack("U1ALICE") == []
