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
