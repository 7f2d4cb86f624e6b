"""Carrying out expiries and revocations at the identity provider: one continuous pipeline per tick.

Each grant due for revocation passes through three stages, each exactly once:

1. **decide** — claim a chunk, then, under the memberships' locks: who owns each membership (ownership
   moves to an heir, standing access is kept), which grants end without an IdP call (recorded right there);
2. **call** — one task per remaining grant; the connector (``connectors/resilience.py``) is the only
   gate: it paces calls at the rate the provider accepts and bounds how many run at once;
3. **record** — the outcome of every finished call, grouped (a group commit).

One loop drives the database side: each of its transactions records the calls that have finished and,
while fewer than ``MAX_OUTSTANDING`` grants are decided and unrecorded, claims the next chunk, which is
decided in the same transaction on SQLite and in the next on PostgreSQL (the memberships' locks come
before any row: docs/architecture.md, "Row locks and their order"). So the next chunk is ready while
earlier calls still wait for their slot, and a throttled connector always has a call ready when a slot
frees up: the provider's pace, not batch boundaries, sets the throughput. Few, full transactions keep the
pipeline's turns at SQLite's single writer (shared with the outbox) rare. At most ``MAX_OUTSTANDING``
grants are in flight, so a slow provider is never flooded and a tick ends soon after its budget.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services.access import backstop
from bot.services.access.fencing import Fence, holds, undo_stale_revoke
from bot.services.access.revocation_outcomes import ended, revoke_failed, sessions_outcome, votes_by_request
from bot.services.claims import LEASE, ClaimedIds, claim_grants, lock_holders
from bot.services.requesting.not_started import not_started
from bot.services.runtime import Runtime
from connectors.base import (
    ConfigError,
    ConnectorError,
    IdpUser,
    NotFound,
    Target,
    TargetKind,
    session_terminator,
)
from storage.tables import AccessRequest, Grant

log = logging.getLogger(__name__)
# A claim given back (``_give_back``): only the claim that took it, only while it is still to be revoked.
_GIVE_BACK = (update(Grant).where(Grant.id == bindparam("b_id"), Grant.claim_token == bindparam("b_token"),  # type: ignore[arg-type]
                                  Grant.status == "revoking")  # type: ignore[arg-type]
              .values(claimed_until=None, claimed_by=None))

CHUNK = 50  # grants claimed and decided in one transaction
MAX_OUTSTANDING = 4 * CHUNK  # decided and not yet recorded: calls waiting at the connector, or finished
PER_CONNECTOR = MAX_OUTSTANDING - CHUNK  # in flight at one connector: a slow one leaves room for the others
RECORD_MAX = 2 * CHUNK  # finished calls recorded in one transaction
RECORD_LINGER = 0.2  # seconds a finished call may wait to be recorded together with later ones


def target_of(grant: Grant) -> Target:
    return Target(kind=TargetKind(grant.target_kind), id=grant.target_id)


def granted_user(grant: Grant) -> IdpUser | None:
    """The account the membership was granted to, by the IdP id recorded when it was granted.

    Revocation removes *that* account's membership. Looking the user up again by email would miss it
    when the email changed at the IdP during the grant (the revoke would count as done and the access
    would stay), and would hit another account if the address had been given to someone else."""
    return IdpUser(id=grant.user_idp_id, email=grant.user_email) if grant.user_idp_id else None


async def idp_user(rt: Runtime, grant: Grant) -> IdpUser:
    """The grant's user at its connector (cached by the directory); ``NotFound`` if there is none."""
    user = await rt.directory.find_user(grant.connector, grant.user_email)
    if user is None:
        raise NotFound(f"no account for {grant.user_email} at {grant.connector}")
    return user


@dataclass(slots=True)
class _Call:
    """A grant decided for an IdP call, and how the call went."""

    grant: Grant
    end_sessions: bool
    token: int = 0  # the token this worker's claim set (bot/services/access/fencing.py)
    stale: bool = False  # the claim passed to another worker: nothing of this call is recorded
    error: ConnectorError | None = None
    session_error: str | None = None


class Revoker:
    """Revokes grants in status ``revoking``: claims, decides, calls the IdP, records the outcome."""

    chunk, max_outstanding, per_connector = CHUNK, MAX_OUTSTANDING, PER_CONNECTOR

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def run_due(self, *, now: datetime, budget_s: float = 5.0, expire_limit: int = 2000) -> int:
        """Turn up to ``expire_limit`` active grants past expiry at ``now`` into revocations (each exactly
        once), then carry out the revocations due at ``now``. Claims no new ones after ``budget_s``
        seconds, then finishes and records the calls it started. Returns how many grants it claimed."""
        deadline = time.monotonic() + budget_s
        calls: set[asyncio.Task[_Call]] = set()
        finished: list[_Call] = []
        first_finished_at = 0.0  # monotonic time the oldest unrecorded call finished
        outstanding = 0  # decided for a call and not yet recorded
        in_flight: Counter[str] = Counter()  # the same, per connector
        held_back = False  # the last claim skipped a full connector and found nothing else: wait for a call
        total, exhausted, expire = 0, False, True
        chunk = self.chunk
        try:
            while True:
                claim = (not exhausted and not held_back and outstanding <= self.max_outstanding - chunk
                         and time.monotonic() < deadline)
                # Record with a claim anyway; else when a chunk's worth has finished, when nothing else is
                # running, or when the oldest finished call has waited long enough.
                if finished and (claim or len(finished) >= chunk or not calls
                                 or time.monotonic() - first_finished_at >= RECORD_LINGER):
                    record, finished = finished[:RECORD_MAX], finished[RECORD_MAX:]
                    first_finished_at = time.monotonic()
                else:
                    record = []
                if (record and exhausted and total >= chunk and time.monotonic() < deadline
                        and outstanding - len(record) <= self.max_outstanding - chunk):
                    # A mass expiry is under way: with this step, also take what fell due since ``now``
                    # rather than ending the run and waiting for the rest of the tick.
                    fresh = self.rt.clock.now()
                    if fresh > now:
                        now, exhausted, expire, claim = fresh, False, True, True
                if claim or record or expire:
                    # A connector with ``per_connector`` calls in flight (throttled, or slow) is skipped, so
                    # the grants due at the other connectors are not held up behind it.
                    skip = sorted(c for c, n in in_flight.items() if n >= self.per_connector)
                    try:
                        claimed_ids, decided = await self._claim(now, record=record, claim=claim, skip=skip,
                                                                 expire_limit=expire_limit if expire else 0)
                    except BaseException:
                        finished[:0] = record  # not committed (or not known to be): still to be recorded
                        raise
                    claimed = len(claimed_ids)
                    decided = await self._decide_apart(claimed_ids, decided)
                    expire = False
                    outstanding += len(decided) - len(record)
                    in_flight.update(c.grant.connector for c in decided)
                    in_flight.subtract(c.grant.connector for c in record)
                    held_back = held_back and not record  # a call finished: a skipped connector may have room
                    total += claimed
                    if claim and claimed < chunk:  # a short chunk: nothing else is due (at the unskipped ones)
                        held_back, exhausted = (True, exhausted) if skip else (held_back, True)
                    calls.update(asyncio.create_task(self.call(c)) for c in decided)
                    continue
                if not calls:
                    return total
                timeout = max(0.0, first_finished_at + RECORD_LINGER - time.monotonic()) if finished else None
                done, calls = await asyncio.wait(calls, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if done and not finished:
                    first_finished_at = time.monotonic()
                broken = [t for t in done if not t.cancelled() and t.exception() is not None]
                finished.extend(t.result() for t in done if not t.cancelled() and t not in broken)
                if broken:  # a bug, not an IdP error (those are kept in the outcome)
                    broken[0].result()
        except (Exception, asyncio.CancelledError):
            # Stopping (cancelled), or a step failed: claim nothing more, but record what the IdP has done
            # or is doing, as a tick that is let finish would. Shielded, so that a second cancel cannot
            # cut that transaction short; what still fails stays claimed and is retried when the claim
            # lapses or the instance restarts (revocation is idempotent, recording happens once).
            await asyncio.shield(self._finish(now, calls, finished))
            raise

    async def _finish(self, now: datetime, calls: set[asyncio.Task[_Call]], finished: list[_Call]) -> None:
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        finished = finished + [o for o in outcomes if isinstance(o, _Call)]
        if not finished:
            return
        try:
            await self.step(now, record=finished, claim=False, expire_limit=0)
        except Exception:
            log.exception("recording %d revocation(s) failed; they are retried when their claims lapse",
                          len(finished))

    async def step(self, now: datetime, *, record: list[_Call], claim: bool, expire_limit: int,
                   skip: list[str] | None = None) -> tuple[int, list[_Call]]:
        """Record ``record``; move up to ``expire_limit`` grants past expiry to ``revoking``; if ``claim``,
        claim and decide a chunk. Returns how many grants were claimed, and those whose membership must go."""
        claimed, decided = await self._claim(now, record=record, claim=claim, expire_limit=expire_limit, skip=skip)
        return len(claimed), await self._decide_apart(claimed, decided)

    async def _claim(self, now: datetime, *, record: list[_Call], claim: bool, expire_limit: int,
                     skip: list[str] | None = None) -> tuple[ClaimedIds, list[_Call] | None]:
        """One transaction: record ``record``; move up to ``expire_limit`` grants past expiry to
        ``revoking``; if ``claim``, claim a chunk — and on SQLite (one writer, no locks) decide it."""
        rt, heirs = self.rt, list[Grant]()  # active grants that inherit a membership here (the expiry backstop)
        async with rt.db.transaction() as session:
            if record:
                await self._record(session, record)
            if expire_limit:
                await claim_grants(
                    rt.db, owner=rt.instance_id, status="active", due_column=Grant.expires_at, now=now,
                    lease=timedelta(0), limit=expire_limit, session=session,
                    set_values={"status": "revoking", "end_reason": "expired", "next_attempt_at": now,
                                "warn_at": None, "claimed_until": None})
            if not claim:
                return ClaimedIds([]), []
            grant_ids = await claim_grants(rt.db, owner=rt.instance_id, status="revoking", session=session,
                                           due_column=Grant.next_attempt_at, now=now, lease=LEASE, limit=self.chunk,
                                           exclude=(Grant.connector, skip) if skip else None)
            decided = await self._decide(session, grant_ids, heirs) if rt.db.is_sqlite or not grant_ids else None
        await backstop.move_for_heirs(rt, heirs)  # the provider's expiry follows the hand-off, after the commit
        return grant_ids, decided

    async def _decide_apart(self, grant_ids: ClaimedIds, decided: list[_Call] | None) -> list[_Call]:
        """The claimed grants decided (None: not yet, on PostgreSQL) in a transaction of their own, which takes
        the memberships' locks before any row (docs/architecture.md, "Row locks and their order"): the claim
        held the grants' rows, and a transaction holding a membership's lock may be waiting for one. If it
        fails (a deadlock's victim, the connection lost, a stop), the claim is given back, so the next pass
        takes the grants again at once instead of after the lease: their access must not outlive it."""
        if decided is None:
            heirs: list[Grant] = []
            try:
                async with self.rt.db.transaction() as session:
                    decided = await self._decide(session, grant_ids, heirs)
                await backstop.move_for_heirs(self.rt, heirs)
            except BaseException:
                await asyncio.shield(self._give_back(grant_ids))
                raise
        for c in decided:
            c.token = grant_ids.tokens[c.grant.id]
        return decided

    async def _give_back(self, grant_ids: ClaimedIds) -> None:
        """Free the claim on those of ``grant_ids`` still revoking under it (its token: a claim another
        worker has taken since is left alone). Best effort: what fails here waits for the lease."""
        try:
            async with self.rt.db.transaction() as session:
                for grant_id in grant_ids:
                    await session.execute(_GIVE_BACK, {"b_id": grant_id, "b_token": grant_ids.tokens[grant_id]})
        except Exception:
            log.exception("giving back the claim on %d revocation(s) failed; they wait for their lease",
                          len(grant_ids))

    # ---- decide --------------------------------------------------------------------------------
    async def _decide(self, session: AsyncSession, grant_ids: ClaimedIds, heirs: list[Grant]) -> list[_Call]:
        """Move ownership to an heir where another grant holds the same membership, end (and record) the
        grants that own nothing; return the grants whose membership must go. The memberships' locks first,
        then the grants' rows (those still under this claim), then their requests'."""
        rt = self.rt
        if not grant_ids:
            return []
        if not rt.db.is_sqlite:  # the grants as claimed, to know their memberships (which never change)
            await lock_holders(rt.db, session, (await session.execute(select(Grant).where(
                Grant.id.in_(grant_ids)))).scalars().all())
        batch = [g for g in (await session.execute(select(Grant).where(Grant.id.in_(grant_ids)).order_by(Grant.id)
                                                   .with_for_update().execution_options(populate_existing=True)))
                 .scalars().all() if g.status == "revoking" and g.claim_token == grant_ids.tokens[g.id]]
        emails = {g.user_email for g in batch}
        # Heirs: active grants, and grants being carried out. A grant that has not started (a scheduled
        # one) holds nothing and inherits nothing: the membership goes, and is added again at its start.
        now = rt.clock.now()
        live = [o for o in (await session.execute(select(Grant).where(
            Grant.user_email.in_(emails), Grant.status.in_(["active", "granting"]))
            .order_by(Grant.expires_at.desc()))).scalars().all() if not not_started(o, now)]
        kept: dict[str, str] = {}  # the grants that end here without an IdP call, and why
        for g in batch:
            others = [o for o in live if o.id != g.id and (o.connector, o.target_kind, o.target_id, o.user_email)
                      == (g.connector, g.target_kind, g.target_id, g.user_email)]
            if g.owns_membership and others:
                heir = others[0]
                heir.owns_membership = True
                if heir.status == "granting":
                    heir.pre_member = False
                else:
                    heirs.append(heir)
                g.owns_membership = False
            if not g.owns_membership:
                kept[g.id] = "another grant still holds it" if others else "it was held before the grant"
        await session.flush()  # the heirs' rows are locked here, before the requests' rows
        reqs = {r.id: r for r in (await session.execute(select(AccessRequest).where(
            AccessRequest.id.in_([g.request_id for g in batch])).order_by(AccessRequest.id)
            .with_for_update())).scalars()}
        # the votes describe the grants that end here; the others' are read when their call is recorded
        votes = await votes_by_request(session, sorted({g.request_id for g in batch if g.id in kept})) \
            if kept else {}
        to_call: list[_Call] = []
        for g in batch:
            if g.id in kept:
                await ended(self.rt, session, g, kept=kept[g.id], req=reqs[g.request_id],
                            votes=votes.get(g.request_id, []))
            else:
                elig = rt.eligibility(reqs[g.request_id].eligibility)
                to_call.append(_Call(g, end_sessions=bool(getattr(elig, "terminate_sessions", False))))
        return to_call

    # ---- call ----------------------------------------------------------------------------------
    async def call(self, c: _Call) -> _Call:
        """Remove the membership at the IdP (and end sessions if asked); errors are kept, not raised."""
        g = c.grant
        try:
            user = granted_user(g)  # no IdP lookup: the id is known (and stays right if the email changes)
            if user is None:  # a grant that never completed (failed grant being cleaned up): look it up
                try:
                    user = await idp_user(self.rt, g)
                except NotFound:
                    return c  # the account is gone at the IdP: no membership is left to remove
            connector = self.rt.connector(g.connector)
            fence = Fence(g.id, c.token)
            if not await holds(self.rt, fence):  # fenced: another worker took the revocation over
                c.stale = True
                return c
            await connector.revoke(user, target_of(g), grant_id=g.id)
        except ConnectorError as exc:
            c.error = exc
            return c
        if not await holds(self.rt, fence):  # the removal went through late: give back what a live grant needs
            c.stale = True
            await undo_stale_revoke(self.rt, fence, g, user)
            return c
        if c.end_sessions:  # best effort: a failure is audited and alerted, never holds the revoke back
            terminator = session_terminator(connector)
            try:
                if terminator is None:
                    raise ConfigError("no session capability", user_message=f"{g.connector} cannot end sessions.")
                await terminator.terminate_sessions(user)
            except ConnectorError as exc:
                c.session_error = exc.user_message
            except Exception as exc:  # a bug in one connector must not leave the revoke unrecorded
                log.exception("terminate_sessions failed for grant %s", g.id)
                c.session_error = type(exc).__name__
        return c

    # ---- record ------------------------------------------------------------------------------
    async def _record(self, session: AsyncSession, calls: list[_Call]) -> None:
        """Each grant whose call succeeded ends (audited once); the others are scheduled to try again."""
        rows = {r.id: r for r in (await session.execute(select(Grant).where(
            Grant.id.in_([c.grant.id for c in calls])).order_by(Grant.id).with_for_update())).scalars()}
        reqs = {r.id: r for r in (await session.execute(select(AccessRequest).where(
            AccessRequest.id.in_([c.grant.request_id for c in calls])).order_by(AccessRequest.id)
            .with_for_update())).scalars()}
        votes = await votes_by_request(session, list(reqs))
        for c in calls:
            row = rows.get(c.grant.id)
            if row is None or row.status != "revoking" or c.stale or row.claim_token != c.token:
                continue  # recorded already (a retried step whose first commit did get through), or fenced
            if c.error is None:
                row.owns_membership = False
                await ended(self.rt, session, row, kept=None, req=reqs[row.request_id],
                            votes=votes.get(row.request_id, []))
                if c.end_sessions:
                    await sessions_outcome(self.rt, session, row, reqs[row.request_id], c.session_error)
            else:
                await revoke_failed(self.rt, session, row, c.error)
