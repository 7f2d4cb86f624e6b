"""Slack's per-method tiers, enforced by the fake; jitbot's notices under them arrive once, in order,
and a restarted notifier asks Slack only about people it has never met. The short version of
``bench.slack_tiers``: it counts calls, on one clock that the test moves (no waiting)."""

from __future__ import annotations

from datetime import timedelta

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.fakes import FakeSlack
from bot.fakes.slack_tiers import METHOD_TIERS, TIER_PER_MINUTE
from bot.policy_file import parse_policy
from bot.services.background.worker import Worker
from bot.services.clock import ManualClock
from bot.services.outbox.delivery import RetryLater
from bot.services.outbox.dispatcher import OutboxDispatcher
from bot.slack.notifier import SlackNotifier
from tests.conftest import DbFactory
from tests.services.stack import make_stack

TOKEN = "xoxb-test-token"
PEOPLE = 24


async def test_the_fake_refuses_a_method_over_its_tier_with_retry_after_and_refills_with_time() -> None:
    now = [1000.0]
    async with FakeSlack(token=TOKEN) as slack:
        slack.add_user("U1ANN", "ann", email="ann@example.com")
        slack.enforce_tiers(now=lambda: now[0])
        client = AsyncWebClient(token=TOKEN, base_url=slack.url)
        allowance = TIER_PER_MINUTE[METHOD_TIERS["users.lookupByEmail"]]  # Tier 3: 50 a minute
        for _ in range(allowance):
            await client.users_lookupByEmail(email="ann@example.com")
        try:
            await client.users_lookupByEmail(email="ann@example.com")
            raise AssertionError("the 51st lookup in a minute was accepted")
        except SlackApiError as exc:
            assert exc.response.status_code == 429 and int(exc.response.headers["Retry-After"]) >= 1
        await client.users_info(user="U1ANN")  # another method: its own bucket
        now[0] += 60 / allowance  # one call's worth of time
        await client.users_lookupByEmail(email="ann@example.com")


def _lookups(slack: FakeSlack) -> list[object]:
    """users.lookupByEmail calls Slack answered (a 429 is not a lookup)."""
    return [c for c in slack.state.calls if c.method == "users.lookupByEmail" and c.status == 200]


def _policy() -> str:
    users = "".join(f"      - {{email: p{i}@example.com}}\n" for i in range(PEOPLE))
    members = ", ".join(f"p{i}@example.com" for i in range(PEOPLE))
    return f"""
audit_channel: C0AUDIT
connectors:
  demo:
    type: memory
    users:
{users}    groups: {{people: [{members}], target: []}}
eligibilities:
  - {{name: ro, connector: demo, target: {{group: target}}, requestors: {{groups: [people]}}, max_duration: 1h,
     warn_before: 10m}}
"""


async def test_expiry_notices_under_slacks_tiers_arrive_once_in_order_and_a_restart_asks_only_about_strangers(
        db_factory: DbFactory, clock: ManualClock) -> None:
    db = db_factory()
    loaded = parse_policy(_policy(), source="test", env={})
    stack = await make_stack(db, loaded, clock)
    async with FakeSlack(token=TOKEN) as slack:
        slack.add_channel("C0AUDIT", "jit-audit")
        for i in range(PEOPLE):
            slack.add_user(f"U{i:03d}P", f"p{i}", email=f"p{i}@example.com")
        # a fifth of Slack's rates: 24 people's lookups (Tier 3) do not fit in one minute's allowance
        tiers = slack.enforce_tiers(now=lambda: clock.now().timestamp(), speedup=0.2)
        slack.limit_channel_posts(1.0, 3, now=lambda: clock.now().timestamp())

        def worker() -> Worker:  # a fresh process: a new notifier with nothing in memory, the same database
            notifier = SlackNotifier(AsyncWebClient(token=TOKEN, base_url=slack.url), db, audit_channel="C0AUDIT",
                                     clock=clock)
            notifier.lookups_per_minute *= 0.2  # the tier as the fake runs it
            return Worker(stack.rt, OutboxDispatcher(db, notifier, clock), worker_id="tiers")

        async def run(w: Worker, seconds: int) -> None:
            for _ in range(seconds):  # what is due now, then a second later
                await w.run_until_idle()
                clock.advance(timedelta(seconds=1))

        for i in range(PEOPLE):
            await stack.requests.submit(requester=f"p{i}@example.com", eligibility="ro",
                                        duration=timedelta(hours=1), justification="on call")
        first = worker()
        await run(first, 30)
        known_before_restart = len(_lookups(slack))
        assert 0 < known_before_restart < PEOPLE  # the tier held the rest back: a restart comes mid-way
        second = worker()
        await run(second, 400)
        clock.advance(timedelta(hours=1))
        await run(second, 400)

        assert len(_lookups(slack)) == PEOPLE  # each person looked up once, across the restart
        assert not any(c.method == "conversations.open" for c in slack.state.calls)
        assert tiers.rejected["users.lookupByEmail"] > 0  # the tier was met, and waited out
        for i in range(PEOPLE):
            texts = [m.text for m in slack.dm_messages(f"U{i:03d}P")]
            assert len(texts) == 3, texts  # each notice once, in the order of the events
            assert "was approved" in texts[0] and "You now have ro" in texts[1] and "has expired" in texts[2], texts
        assert not await stack.is_member("p0@example.com", "target")


async def test_after_slack_refuses_a_lookup_the_notifier_keeps_to_the_tier_instead_of_being_refused_again(
        db_factory: DbFactory, clock: ManualClock) -> None:
    """200 people unknown at once, each message retried when the notifier says (as the outbox does): one
    429 tells the notifier the tier is reached; after it the lookups keep to the tier's pace, so Slack
    refuses almost none of them again, and the whole takes about the least time the tier allows."""
    people = 200
    per_minute = TIER_PER_MINUTE[METHOD_TIERS["users.lookupByEmail"]]
    async with FakeSlack(token=TOKEN) as slack:
        for i in range(people):
            slack.add_user(f"U{i:03d}Q", f"q{i}", email=f"q{i}@example.com")
        tiers = slack.enforce_tiers(now=lambda: clock.now().timestamp())
        db = db_factory()
        await db.migrate()
        notifier = SlackNotifier(AsyncWebClient(token=TOKEN, base_url=slack.url), db, audit_channel="C0AUDIT",
                                 clock=clock)
        start = clock.now()
        due = {f"q{i}@example.com": start for i in range(people)}
        for _ in range(20 * people):  # bounded: each pass is one moment of the clock
            if not due:
                break
            clock.set(max(clock.now(), min(due.values())))
            for email in sorted(e for e, at in due.items() if at <= clock.now()):
                try:
                    await notifier.slack_user(email)
                    del due[email]
                except RetryLater as wait:
                    due[email] = clock.now() + timedelta(seconds=max(wait.after or 1.0, 0.001))
                except SlackApiError:  # the outbox waits Retry-After (the notifier paused itself)
                    due[email] = clock.now() + timedelta(seconds=1)
        assert not due, f"{len(due)} people never looked up"
        assert len(_lookups(slack)) == people
        assert 1 <= tiers.rejected["users.lookupByEmail"] <= 3, tiers.rejected  # the first 429, hardly another
        least = (people - per_minute) * 60 / per_minute  # the bucket starts full, then refills at the tier
        took = (clock.now() - start).total_seconds()
        assert least <= took <= 1.1 * least, (took, least)
