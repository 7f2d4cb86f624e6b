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


async def test_user_change_and_team_join_events_keep_the_ids_current(db_factory: DbFactory, clock: ManualClock) -> None:
    async with slack_env(db_factory(), POLICY, clock) as env:
        db = env.stack.rt.db
        joined = {"id": "U7NEWBIE", "name": "newbie", "profile": {"email": "Newbie@example.com"}}
        assert (await env.sender.event({"type": "team_join", "user": joined})).status == 200
        assert await people.known(db, "newbie@example.com", clock.now()) == "U7NEWBIE"

        moved = {"id": "U1ALICE", "name": "alice", "profile": {"email": "alice.new@example.com"}}
        assert (await env.sender.event({"type": "user_change", "user": moved})).status == 200
        assert await people.known(db, "alice.new@example.com", clock.now()) == "U1ALICE"

        gone = {"id": "U7NEWBIE", "deleted": True, "profile": {"email": "newbie@example.com"}}
        await env.sender.event({"type": "user_change", "user": gone})
        assert await people.known(db, "newbie@example.com", clock.now()) is None

        forged = {"id": "<!channel>", "profile": {"email": "bob@example.com"}}
        await env.sender.event({"type": "user_change", "user": forged})
        assert await people.known(db, "bob@example.com", clock.now()) is None
