"""People's Slack ids live in the database: a restart or another replica asks Slack only about people it
has never met, DMs need no conversations.open, and user_change / team_join keep the ids current."""

from __future__ import annotations

from datetime import timedelta

from slack_sdk.web.async_client import AsyncWebClient

from bot.fakes import FakeSlack
from bot.services import people
from bot.services.clock import ManualClock
from bot.slack.notifier import SlackNotifier
from tests.conftest import POLICY, DbFactory
from tests.slack.harness import slack_env

TOKEN = "xoxb-test-token"


def _calls(slack: FakeSlack, method: str) -> int:
    return sum(1 for c in slack.state.calls if c.method == method)


async def test_a_restarted_notifier_asks_slack_only_about_people_it_has_never_met(
        db_factory: DbFactory, clock: ManualClock) -> None:
    db = db_factory()
    await db.migrate()
    async with FakeSlack(token=TOKEN) as slack:
        for i in range(12):
            slack.add_user(f"U{i:03d}PERSON", f"p{i}", email=f"p{i}@example.com")

        def notifier() -> SlackNotifier:  # a fresh process: nothing in memory, the same database
            return SlackNotifier(AsyncWebClient(token=TOKEN, base_url=slack.url), db, audit_channel="C0AUDIT",
                                 clock=clock)

        first = notifier()
        for i in range(8):
            await first.deliver("transition_notice", {"email": f"P{i}@example.com", "text": f"hello {i}"})
        assert _calls(slack, "users.lookupByEmail") == 8
        assert _calls(slack, "conversations.open") == 0  # DMs go to the user id itself
        assert [m.text for m in slack.dm_messages("U003PERSON")] == ["hello 3"]

        second = notifier()
        for i in range(12):
            await second.deliver("transition_notice", {"email": f"p{i}@example.com", "text": f"again {i}"})
        assert _calls(slack, "users.lookupByEmail") == 8 + 4  # only the four it had never met
        assert [m.text for m in slack.dm_messages("U011PERSON")] == ["again 11"]

        clock.advance(people.TTL + timedelta(minutes=1))  # stale: asked again, once
        third = notifier()
        await third.deliver("transition_notice", {"email": "p0@example.com", "text": "later"})
        await third.deliver("transition_notice", {"email": "p0@example.com", "text": "later still"})
        assert _calls(slack, "users.lookupByEmail") == 13


async def test_user_change_and_team_join_events_forget_and_never_redirect_a_dm(
        db_factory: DbFactory, clock: ManualClock) -> None:
    """An event only makes jitbot ask Slack again: a guest or a user of another workspace who puts an
    approver's address in their own profile does not receive that approver's DMs."""
    async with slack_env(db_factory(), POLICY, clock) as env:
        db, now = env.stack.rt.db, clock.now()
        env.slack.add_user("U9MALLORY", "mallory", email="mallory@example.com", team_id="T0ELSEWHERE",
                           is_stranger=True)
        env.slack.add_user("U8GUEST", "guest", email="guest@example.com", guest="multi")
        await people.remember(db, "bob@example.com", "U2BOB", now)
        await people.remember(db, "alice@example.com", "U1ALICE", now)

        for forger in ("U9MALLORY", "U8GUEST"):
            forged = {"id": forger, "name": "x", "profile": {"email": "bob@example.com"}}
            assert (await env.sender.event({"type": "user_change", "user": forged})).status == 200
            assert await people.known(db, "bob@example.com", now) is None  # forgotten, not redirected
            notifier = SlackNotifier(AsyncWebClient(token=TOKEN, base_url=env.slack.url), db,
                                     audit_channel="C0AUDIT", clock=clock)
            await notifier.deliver("transition_notice", {"email": "bob@example.com", "text": f"for bob ({forger})"})
            assert await people.known(db, "bob@example.com", now) == "U2BOB"  # Slack's own answer
            assert [m.text for m in env.slack.dm_messages(forger)] == []
        assert [m.text for m in env.slack.dm_messages("U2BOB")] == ["for bob (U9MALLORY)", "for bob (U8GUEST)"]

        moved = {"id": "U1ALICE", "name": "alice", "profile": {"email": "alice.new@example.com"}}
        assert (await env.sender.event({"type": "user_change", "user": moved})).status == 200
        assert await people.known(db, "alice@example.com", now) is None  # the address last learned for U1ALICE
        joined = {"id": "U7NEWBIE", "name": "newbie", "profile": {"email": "newbie@example.com"}}
        assert (await env.sender.event({"type": "team_join", "user": joined})).status == 200
        assert await people.known(db, "newbie@example.com", now) is None  # nothing written from an event
