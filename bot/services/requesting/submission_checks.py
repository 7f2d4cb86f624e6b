"""What a submission must pass besides the domain's rules: the checks that need no I/O (run again
inside ``RequestService.submit``, and by the Slack modal before it answers), and, inside the
submitting transaction, one open request per person and eligibility and the per-person rate limit,
one submission of a person at a time."""

from __future__ import annotations

import zlib
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain.durations import format_duration
from bot.domain.policy import Eligibility
from bot.domain.requests import PolicyViolation, Status, Submission, validate_submission
from bot.services.requesting.bundles import check_held
from bot.services.runtime import Runtime
from storage.core_tx import CoreTx
from storage.db import ADVISORY_XACT_LOCK
from storage.tables import AccessRequest, Grant

# The requester's pending requests of an eligibility (a few at most; the caller keeps the "access" ones).
# No condition on ``kind``: with one, both databases could pick ix_request_review_due (kind, …) and read
# every access request ever made — SQLite without statistics did; PostgreSQL's index statistics in
# bench.throughput showed ~280 entries of it read per flow. ix_request_open (migration 0008) serves it.
# Pending, approved or active: one of each (person, eligibility) at a time — more time is an extension.
# Access being released or revoked (its grant ``revoking``) no longer counts: it may be asked for again —
# unless the request has a live grant as well (a failed grant an admin retried keeps its old row).
_ENDING = select(Grant.id).where(Grant.request_id == AccessRequest.id,  # type: ignore[arg-type]
                                 Grant.status.in_(["revoking", "ended", "failed"]))  # type: ignore[attr-defined]
_LIVE = select(Grant.id).where(Grant.request_id == AccessRequest.id,  # type: ignore[arg-type]
                               Grant.status.in_(["granting", "active"]))  # type: ignore[attr-defined]
_OPEN_DUPLICATE = select(AccessRequest.id, AccessRequest.kind, AccessRequest.status, AccessRequest.bundle_id).where(
    AccessRequest.requester == bindparam("b_requester"), AccessRequest.eligibility == bindparam("b_elig"),
    AccessRequest.status.in_([Status.PENDING.value, Status.APPROVED.value, Status.ACTIVE.value]),  # type: ignore[attr-defined]
    or_(~_ENDING.exists(), _LIVE.exists()))
# The requester's requests of the last hour (the per-person rate limit); the requester index serves it.
_RECENT = select(func.count()).select_from(AccessRequest).where(
    AccessRequest.requester == bindparam("b_requester"), AccessRequest.created_at > bindparam("b_since"))  # type: ignore[operator]


def check_start(rt: Runtime, starts_at: datetime | None) -> None:
    """A scheduled start must lie in the future and no further ahead than the policy allows."""
    if starts_at is None:
        return
    now, ahead = rt.clock.now(), rt.policy.settings.max_schedule_ahead
    if starts_at <= now:
        raise PolicyViolation("The start time must be in the future.", field="starts_at")
    if starts_at - now > ahead:
        raise PolicyViolation(f"A request can start at most {format_duration(ahead)} ahead.", field="starts_at")


def precheck_submission(rt: Runtime, *, eligibility: str, duration: timedelta, justification: str,
                        ticket: str | None, starts_at: datetime | None = None) -> None:
    """The checks that need no I/O (eligibility exists, duration, justification, ticket); raises PolicyViolation.

    The Slack modal runs these before acknowledging, so they come back as inline field errors at once;
    ``RequestService.submit`` runs them all again, with the ones that need the directory and database.
    """
    elig = rt.eligibility(eligibility)
    if elig is None:
        raise PolicyViolation(f"There is no eligibility called {eligibility!r}.", field="eligibility")
    validate_submission(Submission(elig.name, "precheck", duration, justification, ticket), elig,
                        requester_eligible=True, justification_max=rt.policy.settings.justification_max,
                        ticket_pattern=rt.policy.settings.ticket_pattern)
    check_start(rt, starts_at)


def _person_key(email: str) -> int:
    return -1 - zlib.crc32(f"submit|{email}".encode())  # < 0: keys of their own


async def lock_person(rt: Runtime, tx: CoreTx | AsyncSession, email: str) -> None:
    """Serialise one person's submissions (and an admin's retry of their failed grant) across replicas
    (PostgreSQL advisory lock until the transaction ends; SQLite has one writer): two at once cannot
    both pass ``check_open_and_rate``."""
    if rt.db.is_sqlite:
        return
    if isinstance(tx, AsyncSession):
        await tx.execute(ADVISORY_XACT_LOCK, {"k": _person_key(email)})
    else:
        await tx.rows(ADVISORY_XACT_LOCK, {"k": _person_key(email)})


async def other_open(session: AsyncSession, requester: str, eligibility: str, *, besides: str) -> str | None:
    """The id of another open access request of ``requester`` for ``eligibility`` than ``besides``, if any
    (an admin's retry of a failed grant must not make it a second one)."""
    rows = (await session.execute(_OPEN_DUPLICATE, {"b_requester": requester, "b_elig": eligibility})).all()
    return next((r.id for r in rows if r.kind == "access" and r.id != besides), None)


async def check_open_and_rate(rt: Runtime, tx: CoreTx, requester: str, elig: Eligibility, now: datetime) -> None:
    """One request per (person, item) pending, approved or active at a time, alone or within a bundle,
    and at most ``settings.max_requests_per_hour`` requests per person; raises PolicyViolation."""
    open_ = [r for r in await tx.rows(_OPEN_DUPLICATE, {"b_requester": requester, "b_elig": elig.name})
             if r.kind == "access"]
    pending = [r.id for r in open_ if r.status == Status.PENDING.value]
    if pending:
        raise PolicyViolation(f"You already have a pending request for {elig.name} ({pending[0]}).")
    if open_:
        held = open_[0]
        of = f", granted with the bundle {held.bundle_id}" if held.bundle_id not in (None, held.id) else ""
        raise PolicyViolation(f"You already have {elig.name} ({held.id}{of}). Extend it (the Extend button, "
                              "or /jit list) or release it first; a second grant of it is not needed.")
    await check_held(rt, tx, requester, elig)  # an item held within a bundle (requesting/bundles.py)
    limit = rt.policy.settings.max_requests_per_hour
    recent = (await tx.scalars(_RECENT, {"b_requester": requester, "b_since": now - timedelta(hours=1)}))[0]
    if recent >= limit:
        raise PolicyViolation(f"You have made {recent} requests in the last hour, the most allowed "
                              f"({limit}); please try again later.")


async def stored_first(rt: Runtime, requester: str, elig: Eligibility) -> str | None:
    """After the unique index refused a submission (uq_request_one_pending: another submission, on another
    replica or this one, stored it first): the id of the access request that won, if there is one."""
    async with rt.db.sessions() as reader:
        winner = (await reader.execute(_OPEN_DUPLICATE, {"b_requester": requester, "b_elig": elig.name})).all()
    ids = [r.id for r in winner if r.kind == "access"]
    return ids[0] if ids else None
