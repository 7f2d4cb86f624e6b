"""Hostile input against the real Bolt app: forged, tampered, replayed or absurd requests change nothing.

Every request goes through the signed HTTP route (the real app, the strict fake Slack). After each
attack the rows of every table that records a change are counted: none may have moved.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from bot.services.clock import ManualClock
from bot.slack import ids
from storage.tables import AccessRequest, ApprovalVote, Event, Grant, OutboxMessage
from tests.conftest import DbFactory
from tests.slack.harness import Env, slack_env

STRANGER = "U7MALLORY"
INJECTIONS = ["'; DROP TABLE \"grant\"; --", "<!channel> <@U2BOB> <https://evil.example|click>", "*bold* _x_ `y`",
              "R-" + "A" * 20000, "\u202eR-ABCDEFGH", "R-ＡＢＣ", "²", "١", "-1", "0x10", "nan", "", " ", "\x00"]


@pytest.fixture
async def env(db_factory: DbFactory, policy_text: str, clock: ManualClock) -> AsyncIterator[Env]:
    async with slack_env(db_factory(), policy_text, clock) as e:
        e.slack.add_user(STRANGER, "mallory", real_name="Mallory", email="mallory@example.com")
        yield e


async def _counts(env: Env) -> dict[str, int]:
    async with env.stack.rt.db.sessions() as s:
        return {m.__name__: int((await s.execute(select(func.count()).select_from(m))).scalar() or 0)
                for m in (AccessRequest, ApprovalVote, Event, Grant, OutboxMessage)}


async def _pending(env: Env) -> str:
    req = await env.stack.requests.submit(requester="alice@example.com", eligibility="prod-admin",
                                          duration=timedelta(hours=1), justification="deploy", ticket="OPS-1")
    await env.settle()
    return req.id


def _action(env: Env, user: str, action_id: str, value: str) -> dict[str, Any]:
    im = env.slack.state.im_for(user).id
    ctx = {"channel": im, "user": user, "kind": "block_actions", "message_ts": "1.000001"}
    return {**env.sender._base("block_actions", user),
            "container": {"type": "message", "message_ts": "1.000001", "channel_id": im, "is_ephemeral": False},
            "trigger_id": env.slack.issue_trigger(user), "channel": {"id": im, "name": "directmessage"},
            "state": {"values": {}}, "response_url": env.slack.issue_response_url(**ctx),
            "actions": [{"action_id": action_id, "block_id": "b", "type": "button", "value": value,
                         "action_ts": str(time.time())}]}


def _answers(env: Env, user: str) -> list[str]:
    return [str(p.body.get("text", "")) for p in env.slack.response_posts() if p.context.get("user") == user]


SQLITE_ONLY = pytest.mark.parametrize("db_factory", ["sqlite"], indirect=True)  # the database is not the point


@SQLITE_ONLY
async def test_bad_missing_stale_and_replayed_signatures_are_refused(env: Env) -> None:
    rid = await _pending(env)
    before = await _counts(env)
    payload = _action(env, "U2BOB", ids.APPROVE, f"{rid}:1")
    forged = await env.sender.post_payload(payload, secret="not-the-secret")
    stale = await env.sender.post_payload(payload, timestamp=time.time() - 6 * 60)
    future = await env.sender.post_payload(payload, timestamp=time.time() + 6 * 60)
    # a captured, validly signed request replayed later: same body, same headers, old timestamp
    body = "payload=" + json.dumps(payload)
    old = str(int(time.time()) - 5 * 60 - 30)
    headers = {"Content-Type": "application/x-www-form-urlencoded", **env.sender.sign(body, old)}
    assert env.sender._session is not None
    async with env.sender._session.post(env.sender.bot_url, data=body, headers=headers) as res:
        replay = res.status
    async with env.sender._session.post(env.sender.bot_url, data=body,
                                        headers={"Content-Type": "application/x-www-form-urlencoded"}) as res:
        missing = res.status
    assert [forged.status, stale.status, future.status, replay, missing] == [401] * 5
    assert await _counts(env) == before
    assert _answers(env, "U2BOB") == []


async def test_a_valid_click_replayed_within_the_window_changes_nothing_more(env: Env) -> None:
    # Slack's signature has no nonce: inside the 5-minute window a captured request verifies again.
    # The services' own checks must make the replay harmless.
    rid = await _pending(env)
    body = "payload=" + json.dumps(_action(env, "U2BOB", ids.APPROVE, f"{rid}:1"))
    headers = {"Content-Type": "application/x-www-form-urlencoded", **env.sender.sign(body, str(int(time.time())))}
    if env.sender._session is None:
        await env.sender.post_event({"type": "noop"})  # opens the session
    assert env.sender._session is not None
    async with env.sender._session.post(env.sender.bot_url, data=body, headers=headers) as res:
        assert res.status == 200
    after_first = await _counts(env)
    assert after_first["ApprovalVote"] == 1
    for _ in range(3):
        async with env.sender._session.post(env.sender.bot_url, data=body, headers=headers) as res:
            assert res.status == 200
    assert await _counts(env) == after_first
    assert _answers(env, "U2BOB")[-1].startswith("Already approved by bob@example.com")


async def test_unknown_action_ids_change_nothing(env: Env) -> None:
    rid = await _pending(env)
    before = await _counts(env)
    for action_id in ("jit_approve_all", "jit_admin_grant", "../jit_approve", ids.APPROVE.upper()):
        res = await env.sender.post_payload(_action(env, "U2BOB", action_id, f"{rid}:1"))
        assert res.status in (200, 404), (action_id, res.status)
    assert await _counts(env) == before


@pytest.mark.parametrize("action_id", [ids.APPROVE, ids.RELEASE, ids.CANCEL, ids.EXTEND])
async def test_tampered_button_values_are_refused_clearly(env: Env, action_id: str) -> None:
    rid = await _pending(env)
    other = await env.stack.requests.submit(requester="erin@example.com", eligibility="readonly",
                                            duration=timedelta(hours=1), justification="read the logs")
    await env.settle()
    before = await _counts(env)
    values = [f"{rid}:7", f"{rid}:0", f"{rid}:-1", f"{rid}:²", f"{other.id}:1", other.id, "R-NOPE0000:1",
              *INJECTIONS]
    for value in values:
        res = await env.sender.post_payload(_action(env, "U2BOB", action_id, value))
        assert res.status == 200, (value[:40], res.status, res.body)
    answers = _answers(env, "U2BOB")
    assert len(answers) == len(values), answers
    for text in answers:  # a clear refusal, never a raw error, never an echo of injected markup
        assert text and "Traceback" not in text and "<!channel>" not in text and len(text) < 600, text
    assert await _counts(env) == before


async def test_a_stranger_cannot_act_on_a_real_request(env: Env) -> None:
    rid = await _pending(env)
    before = await _counts(env)
    for action_id in (ids.APPROVE, ids.RELEASE, ids.CANCEL, ids.EXTEND):
        res = await env.sender.post_payload(_action(env, STRANGER, action_id, f"{rid}:1" if action_id == ids.APPROVE
                                                    else rid))
        assert res.status == 200
    assert len(_answers(env, STRANGER)) == 4
    assert await _counts(env) == before


def _submission(env: Env, user: str, **fields: str) -> dict[str, Any]:
    def select_(action: str, value: str) -> dict[str, Any]:
        return {action: {"type": "static_select", "selected_option": {"text": {"type": "plain_text", "text": "x"},
                                                                        "value": value}}}

    def text(action: str, value: str) -> dict[str, Any]:
        return {action: {"type": "plain_text_input", "value": value}}

    values = {ids.B_ELIGIBILITY: select_(ids.A_ELIGIBILITY, fields.get("eligibility", "readonly")),
              ids.B_DURATION: select_(ids.A_DURATION, fields.get("duration", "3600")),
              ids.B_JUSTIFICATION: text(ids.A_JUSTIFICATION, fields.get("justification", "why")),
              ids.B_TICKET: text(ids.A_TICKET, fields.get("ticket", "OPS-1"))}
    if "starts" in fields:
        values[ids.B_STARTS] = {ids.A_STARTS: {"type": "datetimepicker", "selected_date_time": fields["starts"]}}
    view = {"id": "V0FORGED", "type": "modal", "callback_id": ids.REQUEST_VIEW, "private_metadata": "",
            "state": {"values": values}, "hash": "1.x", "blocks": []}
    return {**env.sender._base("view_submission", user), "trigger_id": env.slack.issue_trigger(user),
            "view": view, "response_urls": []}


FORGED_FIELDS: list[dict[str, str]] = [
    {"eligibility": "root-everything"}, {"eligibility": "'; DELETE FROM event; --"},
    {"duration": str(9 * 3600)}, {"duration": "-60"}, {"duration": "abc"}, {"duration": "²"},
    {"duration": "0"}, {"duration": "9" * 30}, {"duration": "١٢٠"},
    {"starts": "9" * 30}, {"starts": "²"}, {"starts": "-5"},
    {"eligibility": "prod-admin", "ticket": ""}, {"justification": "x" * 100_000}, {"justification": "\x00"},
]


@pytest.mark.parametrize("early", [False, True], ids=["in-listener", "acked-early"])
async def test_forged_request_submissions_get_an_inline_error(db_factory: DbFactory, policy_text: str,
                                                              clock: ManualClock, early: bool) -> None:
    """Both ways the request modal is answered: by its listener (``process_before_response``, as on a
    FaaS host) and, as the server runs it, before the listener (bot/slack/early_ack.py)."""
    async with slack_env(db_factory(), policy_text, clock, process_before_response=not early) as env:
        before = await _counts(env)
        for fields in FORGED_FIELDS:
            res = await env.sender.post_payload(_submission(env, "U1ALICE", **fields))
            assert res.status == 200, (fields, res.body)
            assert isinstance(res.body, dict) and res.body.get("response_action") == "errors", (fields, res.body)
            errors = res.body["errors"]
            assert errors and all(isinstance(v, str) and 0 < len(v) <= 150 for v in errors.values()), errors
        await _listeners_done()  # after an early ack the listeners run on: they too must change nothing
        assert await _counts(env) == before


async def _listeners_done() -> None:
    """Wait for the Bolt listener tasks still running (Bolt starts one per request, ``ensure_future``)."""
    running = [t for t in asyncio.all_tasks() if "run_ack_function_asynchronously" in repr(t.get_coro())]
    await asyncio.gather(*running)


def _deny_submission(env: Env, user: str, metadata: str, reason: str) -> dict[str, Any]:
    view = {"id": "V0FORGED", "type": "modal", "callback_id": ids.DENY_VIEW, "private_metadata": metadata,
            "hash": "1.x", "blocks": [],
            "state": {"values": {ids.B_REASON: {ids.A_REASON: {"type": "plain_text_input", "value": reason}}}}}
    return {**env.sender._base("view_submission", user), "trigger_id": env.slack.issue_trigger(user),
            "view": view, "response_urls": []}


async def test_tampered_deny_modal_metadata_gets_an_inline_error(env: Env) -> None:
    rid = await _pending(env)
    before = await _counts(env)
    for metadata in [f"{rid}:²", f"{rid}:9", f"{rid}\x00:1", "R-NOPE0000:1", "<!channel>:1", "x" * 5000, ""]:
        for user in ("U2BOB", STRANGER):
            res = await env.sender.post_payload(_deny_submission(env, user, metadata, "no"))
            assert res.status == 200, (metadata[:30], res.status)
            assert isinstance(res.body, dict) and res.body.get("response_action") == "errors", res.body
    assert await _counts(env) == before


@SQLITE_ONLY
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(action_id=st.sampled_from([ids.APPROVE, ids.RELEASE, ids.CANCEL, ids.EXTEND, ids.DENY]),
       value=st.one_of(st.text(max_size=300), st.from_regex(r"R-[A-Z0-9]{0,10}(:[0-9²١-]{0,4})?", fullmatch=True)))
async def test_fuzzed_button_values_from_a_stranger_change_nothing(env: Env, action_id: str, value: str) -> None:
    if not hasattr(env, "_rid"):
        env._rid = await _pending(env)  # type: ignore[attr-defined]
    before = await _counts(env)
    res = await env.sender.post_payload(_action(env, STRANGER, action_id, value))
    assert res.status == 200, (value, res.status, res.body)
    assert await _counts(env) == before
