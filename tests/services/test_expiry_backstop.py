"""The IdP-side expiry backstop through the services: a grant sets the provider's expiry, an extension moves
it, a provider that ended the membership itself ends the grant (revoked, never re-added, audited)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from bot.services.access.reconcile import ReconcileService
from bot.services.clock import ManualClock
from connectors.base import ConnectorError, GrantResult, IdpUser, Target, Transient, parse_target_ref
from storage.tables import AccessRequest, Event, Grant
from tests.conftest import DbFactory
from tests.reliability.test_reconcile import _policy
from tests.services.stack import Stack, make_stack

ALICE = "alice@example.com"


class ExpiringIdp:
    """The memory connector plus a provider-side expiry: what connectors/backstop.py asks of a provider. The
    fake removes a member itself once ``expire(now)`` passes the expiry (the injected clock drives it)."""

    expiry_backstop = True

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.name = inner.name  # type: ignore[attr-defined]
        self.expiries: dict[tuple[str, str], datetime] = {}
        self.fail_moves = False

    def __getattr__(self, attr: str) -> object:
        return getattr(self.inner, attr)

    async def grant(self, user: IdpUser, target: Target, *, grant_id: str, expires_at: datetime) -> GrantResult:
        result: GrantResult = await self.inner.grant(user, target, grant_id=grant_id,  # type: ignore[attr-defined]
                                                     expires_at=expires_at)
        if result.added:  # never on standing access
            self.expiries[(str(target), user.id)] = expires_at
        return result

    async def revoke(self, user: IdpUser, target: Target, *, grant_id: str) -> None:
        self.expiries.pop((str(target), user.id), None)
        await self.inner.revoke(user, target, grant_id=grant_id)  # type: ignore[attr-defined]

    async def move_expiry(self, user: IdpUser, target: Target, *, expires_at: datetime) -> None:
        if self.fail_moves:
            raise Transient("simulated 503")
        if (str(target), user.id) not in self.expiries:
            raise ConnectorError("no membership with an expiry")
        self.expiries[(str(target), user.id)] = expires_at

    async def expire(self, now: datetime) -> list[str]:
        gone = [key for key, at in self.expiries.items() if at <= now]
        for target, uid in gone:
            del self.expiries[(target, uid)]
            await self.inner.revoke(IdpUser(id=uid, email=uid), parse_target_ref(target),  # type: ignore[attr-defined]
                                    grant_id="idp-expiry")
        return [uid for _, uid in gone]


async def _stack(db_factory: DbFactory, clock: ManualClock) -> tuple[Stack, ExpiringIdp]:
    s = await make_stack(db_factory(), _policy(), clock)
    idp = ExpiringIdp(s.rt.connectors["demo"])
    s.rt.connectors["demo"] = idp  # type: ignore[assignment]
    await ReconcileService(s.rt).sweep()  # the baseline: standing access
    return s, idp


async def _active(s: Stack) -> tuple[str, Grant]:
    req = await s.requests.submit(requester=ALICE, eligibility="readonly", duration=timedelta(hours=2),
                                  justification="look")
    await s.worker.run_until_idle()
    async with s.rt.db.sessions() as session:
        g = (await session.execute(select(Grant).where(Grant.request_id == req.id))).scalar_one()  # type: ignore[arg-type]
    return req.id, g


async def _grant(s: Stack, rid: str) -> Grant:
    async with s.rt.db.sessions() as session:
        return (await session.execute(select(Grant).where(Grant.request_id == rid))).scalar_one()  # type: ignore[arg-type]


async def _kinds(s: Stack, rid: str) -> list[str]:
    async with s.rt.db.sessions() as session:
        rows = await session.execute(select(Event.kind).where(Event.request_id == rid).order_by(Event.id))  # type: ignore[call-overload]
        return list(rows.scalars())


async def test_grant_sets_the_idp_expiry(db_factory: DbFactory, clock: ManualClock) -> None:
    s, idp = await _stack(db_factory, clock)
    _, g = await _active(s)
    assert g.status == "active" and idp.expiries == {("group:readonly", ALICE): g.expires_at}


async def test_standing_access_gets_no_idp_expiry(db_factory: DbFactory, clock: ManualClock) -> None:
    s, idp = await _stack(db_factory, clock)
    await idp.inner.grant(IdpUser(id=ALICE, email=ALICE), parse_target_ref("readonly"),  # type: ignore[attr-defined]
                          grant_id="manual", expires_at=clock.now())  # alice was a member before
    rid, g = await _active(s)
    assert g.status == "active" and not g.owns_membership and idp.expiries == {}
    await s.grants.extend(request_id=rid, actor=ALICE, by=timedelta(hours=1))
    assert idp.expiries == {}  # nothing moved either: the standing membership never ends at the IdP


async def test_extending_moves_the_idp_expiry(db_factory: DbFactory, clock: ManualClock) -> None:
    s, idp = await _stack(db_factory, clock)
    rid, g = await _active(s)
    new = await s.grants.extend(request_id=rid, actor=ALICE, by=timedelta(hours=1))
    assert new > g.expires_at  # type: ignore[operator]
    assert idp.expiries[("group:readonly", ALICE)] == new


async def test_a_failed_move_is_audited_and_the_idp_ends_access_at_the_earlier_time(db_factory: DbFactory,
                                                                                   clock: ManualClock) -> None:
    s, idp = await _stack(db_factory, clock)
    rid, g = await _active(s)
    idp.fail_moves = True
    await s.grants.extend(request_id=rid, actor=ALICE, by=timedelta(hours=1))
    assert "backstop_move_failed" in await _kinds(s, rid)
    # jitbot is stopped past the IdP's expiry (the old one): the provider removes the member itself
    clock.advance(timedelta(hours=2, minutes=1))
    assert await idp.expire(clock.now()) == [ALICE]
    assert not await s.is_member(ALICE, "readonly")
    report = await ReconcileService(s.rt).sweep()
    assert report.ended == [g.id] and report.vanished == []
    await s.worker.run_until_idle()
    ended = await _grant(s, rid)
    assert (ended.status, ended.end_reason) == ("ended", "idp_expired")
    async with s.rt.db.sessions() as session:
        req = await session.get(AccessRequest, rid)
    assert req is not None and req.status == "revoked"
    assert not await s.is_member(ALICE, "readonly")  # not added back
    assert "idp_expired" in await _kinds(s, rid)


async def test_jitbot_stopped_past_expiry_the_idp_ends_access_then_jitbot_records_it(db_factory: DbFactory,
                                                                                      clock: ManualClock) -> None:
    s, idp = await _stack(db_factory, clock)
    rid, g = await _active(s)
    clock.advance(timedelta(hours=3))  # no worker ran: jitbot was down
    assert await idp.expire(clock.now()) == [ALICE]
    assert not await s.is_member(ALICE, "readonly")  # access ended by the IdP's expiry at the latest
    await s.worker.run_until_idle()
    ended = await _grant(s, rid)
    assert ended.status == "ended" and ended.end_reason in ("expired", "idp_expired")
    assert not await s.is_member(ALICE, "readonly")
