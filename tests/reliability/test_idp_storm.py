"""A 429 storm and 5xx bursts at Okta during grants and revokes, through the real connector and SDK;
and a mass expiry at an IdP that enforces a rate limit.

The fake Okta (TLS, strict) answers 429 with ``X-Rate-Limit-Reset`` / ``Date`` and 503s on demand. The
connector's pacing runs on a virtual clock (its ``sleep`` advances it), the services on a ManualClock.
Checked: everything completes once Okta recovers; after every 429 no request reaches Okta before the
retry-after has passed; one ``granted`` and one ``expired`` event per request; nothing left behind.

The throttled IdP of ``bench.mass_expiry`` (a fixed 1-second window of R calls, 429 + retry-after
above it) runs on the same virtual clock: hundreds of grants expire at once and the worker revokes
them through the revocation pipeline. Checked by counts, never by timings: each revoked exactly once,
none left a member, each audited exactly once, and few 429s — pacing, not a retry storm.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import select

from bench.common import RecordingIdp
from bench.mass_expiry import POLICY as BULK_POLICY
from bench.mass_expiry import seed as seed_expiring
from bot.domain.requests import PolicyViolation
from bot.policy_file import parse_policy
from bot.services.clock import ManualClock
from connectors.resilience import ResilientConnector
from storage.tables import Event, Grant
from tests.conftest import DbFactory
from tests.fakes.idp.okta import FakeOkta
from tests.fakes.idp.tls import localhost_tls
from tests.services.stack import Stack, make_stack

TOKEN = "00storm-okta-token"
USERS = [f"user{i}@example.com" for i in range(8)]
RETRY_AFTER = 3


class VirtualTime:
    """The connector's monotonic clock: only its own sleeps move it."""

    def __init__(self) -> None:
        self.t = 0.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds



class TimedOkta(FakeOkta):
    """Records (virtual time, method, path, status) of every API call."""

    def __init__(self, vt: VirtualTime, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vt = vt
        self.log: list[tuple[float, str, str, int]] = []
        self.assigns: Counter[str] = Counter()
        self.unassigns: Counter[str] = Counter()

    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        at = self.vt.now()
        response = await super()._gate(request, handler)
        self.log.append((at, request.method, request.path, response.status))
        if response.status == 204 and "/users/" in request.path and request.path.startswith("/api/v1/groups"):
            uid = request.path.rsplit("/", 1)[1]
            (self.assigns if request.method == "PUT" else self.unassigns)[uid] += 1
        return response


@pytest.fixture
async def okta() -> AsyncIterator[tuple[TimedOkta, str, VirtualTime]]:
    context, ca_file = localhost_tls()
    vt = VirtualTime()
    fake = TimedOkta(vt, api_token=TOKEN, page_size=50)
    await fake.start(context)
    yield fake, ca_file, vt
    await fake.stop()


async def _stack(db_factory: DbFactory, clock: ManualClock, fake: TimedOkta, ca_file: str,
                 vt: VirtualTime) -> tuple[Stack, str, dict[str, str]]:
    uids = {e: fake.add_user(e) for e in USERS}
    gid = fake.add_group("jit-ops")
    users = ", ".join(USERS)
    loaded = parse_policy(f"""
audit_channel: "#jit-audit"
admins: {{users: [root@example.com]}}
connectors:
  okta: {{type: okta, org_url: "{fake.base_url}", api_token: "{TOKEN}", ca_file: "{ca_file}", timeout: 10}}
eligibilities:
  - name: ops
    description: Operations
    connector: okta
    target: {{group: {gid}}}
    requestors: {{users: [{users}]}}
    max_duration: 1h
""", source="storm.yml", env={})
    s = await make_stack(db_factory(), loaded, clock)
    inner = s.rt.connectors["okta"]
    assert isinstance(inner, ResilientConnector)
    # Same wrapper as production, on the virtual clock; few attempts so that the services' own
    # retry schedule (next_attempt_at, from retry-after) is exercised too.
    s.rt.connectors["okta"] = ResilientConnector(inner.inner, timeout=10, max_concurrency=4, max_attempts=2,
                                                 max_rate_limited=3, sleep=vt.sleep, monotonic=vt.now,
                                                 jitter=lambda: 1.0)
    return s, gid, uids


async def _drive(s: Stack, clock: ManualClock, done_status: str, n: int) -> int:
    """Tick, and move the clock 1 s at a time, until ``n`` grants are in ``done_status``."""
    for step in range(400):
        await s.worker.tick()
        async with s.rt.db.sessions() as session:
            statuses = list((await session.execute(select(Grant.status))).scalars())
        if statuses.count(done_status) == n:
            return step
        clock.advance(timedelta(seconds=1))
    raise AssertionError(f"not all {done_status} after 400 s: {Counter(statuses)}")


def _assert_retry_after_honoured(log: list[tuple[float, str, str, int]]) -> None:
    # A 429 at virtual time t: Okta's reset is RETRY_AFTER whole seconds after its Date; the connector
    # places it by its own wall clock when that agrees with Date (read within 1.5 s of the start of
    # Date's second), so it waits more than RETRY_AFTER - 1.5 s, however slow the machine.
    # Only calls already in flight with it (at most max_concurrency - 1) may follow sooner: every call that
    # starts after the connector has seen the 429 waits out the retry-after. (Grants run side by side, so
    # a call sent while the 429 was on its way back can carry a later virtual instant than the 429.)
    for i, (t, _, _, status) in enumerate(log):
        if status != 429:
            continue
        early = [(t2, m, p) for t2, m, p, _ in log[i + 1:] if t2 <= t + RETRY_AFTER - 1.5]
        assert len(early) <= 3, \
            f"requests sent before the retry-after of a 429 at {t} had passed: {early[:5]}"


async def _events(s: Stack, kind: str) -> Counter[str]:
    async with s.rt.db.sessions() as session:
        rows = (await session.execute(select(Event.request_id).where(Event.kind == kind))).scalars()  # type: ignore[arg-type]
        return Counter(str(r) for r in rows)


async def test_grants_and_revokes_through_a_429_storm_and_5xx_bursts(
        db_factory: DbFactory, clock: ManualClock, okta: tuple[TimedOkta, str, VirtualTime]) -> None:
    fake, ca_file, vt = okta
    s, gid, uids = await _stack(db_factory, clock, fake, ca_file, vt)
    fake.rate_limit_next(RETRY_AFTER, count=4)  # more than the connector waits out for one call
    with pytest.raises(PolicyViolation, match="rate limiting the bot.*Nothing was submitted"):
        await s.requests.submit(requester=USERS[0], eligibility="ops", duration=timedelta(minutes=30),
                                justification="storm drill")
    reqs = [await s.requests.submit(requester=u, eligibility="ops", duration=timedelta(minutes=30),
                                    justification="storm drill") for u in USERS]
    fake.rate_limit_next(RETRY_AFTER, count=10)
    fake.fail_next(503, count=6)
    await _drive(s, clock, "active", len(USERS))
    assert sorted(fake.members[gid]) == sorted(uids.values())
    assert all(fake.assigns[uid] >= 1 for uid in uids.values())
    assert set((await _events(s, "granted")).values()) == {1} and len(await _events(s, "granted")) == len(reqs)

    clock.advance(timedelta(minutes=31))
    fake.rate_limit_next(RETRY_AFTER, count=14)
    fake.fail_next(503, count=8)
    await _drive(s, clock, "ended", len(USERS))
    assert fake.members[gid] == []
    expired = await _events(s, "expired")
    assert len(expired) == len(reqs) and set(expired.values()) == {1}
    assert sum(1 for *_, st in fake.log if st == 429) == 28 and sum(1 for *_, st in fake.log if st == 503) == 14
    _assert_retry_after_honoured(fake.log)
    assert max(vt.slept) > RETRY_AFTER - 1.5  # the connector waited the storm out rather than hammering
    await s.rt.connectors["okta"].aclose()


async def test_a_mass_expiry_at_a_throttled_idp_loses_nothing_and_is_paced_not_stormed(
        db_factory: DbFactory, clock: ManualClock) -> None:
    # Real time here (about 2 s): the limiter's windows and the connector's pacing must overlap as
    # they do in production. Only counts are asserted.
    n, rate, concurrency = 200, 100, 16
    idp = RecordingIdp(rate=rate)
    s = await make_stack(db_factory(), parse_policy(BULK_POLICY, env={}), clock)
    s.rt.connectors["idp"] = ResilientConnector(idp, max_attempts=2, max_concurrency=concurrency)
    await seed_expiring(s.rt.db, n, clock.now() - timedelta(seconds=2), 1.0)
    idp.members["g"] = {f"user{i}@example.com" for i in range(n)}
    idp.use_up_window()  # other clients just spent this second's budget: the first revoke meets a 429

    await _drive(s, clock, "ended", n)
    assert len(idp.revoked_at) == n and idp.revoked_twice == 0
    assert idp.members["g"] == set()
    expired = await _events(s, "expired")
    assert len(expired) == n and set(expired.values()) == {1}
    # Until a 429 has shown the pace, calls go out as fast as the concurrency bound lets them: the calls
    # in flight when a 429 comes back meet it too (at most ``concurrency``). That happens twice: the
    # window used up by others teaches no pace, so the first window of ours ends in a burst too (how
    # many are in flight then depends on how fast the database hands out calls). From then on the
    # learned pace keeps to the limit, with a 429 now and then from probing upwards. A retry storm
    # would make hundreds.
    assert 1 <= idp.throttled <= 2 * concurrency + n // 20, idp.throttled
    assert idp.calls == n + idp.throttled  # lookups are not limited here, and not paced either
