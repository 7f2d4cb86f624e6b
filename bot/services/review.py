"""The access review: per-eligibility numbers, unused eligibilities, habitual requesters, slow layers,
and the risk reduction against the standing baseline. Computed from the database, read only.

Definitions (over the period ``[since, until)``, requests counted by when they were made):

* requests — access and break-glass requests (extensions belong to their original request);
  approved — those that reached APPROVED (and anything after it); break-glass — kind ``breakglass``.
* hours granted — the part of each grant (``granted_at`` → ``ended_at``, else ``expires_at``, else now)
  inside the period; median duration — of grants that started in the period.
* median time to approve — ``decided_at − created_at`` of approved requests that had approval layers.
* slow layers — per eligibility and layer, the median from the layer opening (request made, or the
  previous layer's last approval) to its last vote; slow when above ``slow_after``.
* baseline — ``transition.baseline_members`` of the eligibility, else how many standing members the
  cut-over removed; standing hours = baseline × hours in the period; "% less exposure" =
  1 − hours granted / standing hours.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import func, select
from sqlmodel import col

from bot.domain.policy import Policy
from bot.domain.requests import BREAKGLASS
from storage.db import Database
from storage.tables import AccessRequest, ApprovalVote, Grant, TransitionRemoval

APPROVED = {"approved", "active", "expired", "revoked", "failed"}
HOUR = 3600.0


@dataclass
class EligibilityStats:
    name: str
    requests: int = 0
    approved: int = 0
    denied: int = 0
    lapsed: int = 0
    breakglass: int = 0
    users: int = 0
    hours_granted: float = 0.0
    median_duration_h: float | None = None
    median_approve_h: float | None = None
    baseline_members: int | None = None
    standing_hours: float | None = None
    reduction_pct: float | None = None


@dataclass(frozen=True)
class SlowLayer:
    eligibility: str
    layer: int
    median_h: float
    decisions: int
    slow: bool


@dataclass
class Review:
    since: datetime
    until: datetime
    eligibilities: list[EligibilityStats]
    unused: list[tuple[str, datetime | None]]
    frequent: list[tuple[str, int, int]]  # (requester, working days with a request, working days)
    layers: list[SlowLayer]
    total_hours: float = 0.0
    total_standing_hours: float | None = None
    total_reduction_pct: float | None = None
    unused_days: int = 30
    weekly: list[tuple[date, float, float]] = field(default_factory=list)  # week, granted h, baseline h


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def _overlap_h(start: datetime, end: datetime, lo: datetime, hi: datetime) -> float:
    return max(0.0, (min(end, hi) - max(start, lo)).total_seconds() / HOUR)


def working_days(since: datetime, until: datetime) -> list[date]:
    """Monday–Friday dates (UTC) that the period touches."""
    day, last = since.date(), (until - timedelta(microseconds=1)).date()
    out = []
    while day <= last:
        if day.weekday() < 5:
            out.append(day)
        day += timedelta(days=1)
    return out


async def baselines(db: Database, policy: Policy) -> dict[str, int]:
    """Standing members before JIT, per eligibility that has a baseline."""
    async with db.sessions() as session:
        removed: dict[str, int] = dict((await session.execute(
            select(col(TransitionRemoval.eligibility), func.count(func.distinct(col(TransitionRemoval.user_email))))
            .group_by(TransitionRemoval.eligibility))).all())
    out = {}
    for e in policy.eligibilities:
        if e.transition is not None and e.transition.baseline_members is not None:
            out[e.name] = e.transition.baseline_members
        elif removed.get(e.name):
            out[e.name] = int(removed[e.name])
    return out


async def _grant_spans(db: Database, since: datetime, until: datetime) -> list[tuple[str, datetime, datetime]]:
    """(eligibility, start, end) of every grant that overlaps the period."""
    async with db.sessions() as session:
        rows = (await session.execute(
            select(col(AccessRequest.eligibility), col(Grant.granted_at), col(Grant.ended_at), col(Grant.expires_at))
            .join(AccessRequest, col(AccessRequest.id) == col(Grant.request_id))
            .where(col(Grant.granted_at).is_not(None), col(Grant.granted_at) < until,
                   (col(Grant.ended_at).is_(None)) | (col(Grant.ended_at) > since)))).all()
    return [(elig, start, min(end or expires or until, until)) for elig, start, end, expires in rows
            if start is not None]


async def build_review(db: Database, policy: Policy, *, since: datetime, until: datetime, unused_days: int = 30,
                       slow_after: timedelta = timedelta(hours=1)) -> Review:
    """The review of ``[since, until)`` for the eligibilities in ``policy`` (and any seen in the data)."""
    async with db.sessions() as session:
        reqs = list((await session.execute(select(AccessRequest).where(
            col(AccessRequest.created_at) >= since, col(AccessRequest.created_at) < until,
            col(AccessRequest.kind) != "extension"))).scalars())
        votes = list((await session.execute(select(ApprovalVote).where(
            col(ApprovalVote.request_id).in_([r.id for r in reqs])))).scalars()) if reqs else []
        last_use: dict[str, datetime] = dict((await session.execute(
            select(col(AccessRequest.eligibility), func.max(col(AccessRequest.created_at)))
                                                .group_by(AccessRequest.eligibility))).all())
    spans = await _grant_spans(db, since, until)
    base = await baselines(db, policy)
    names = [e.name for e in policy.eligibilities]
    names += sorted({r.eligibility for r in reqs} - set(names))
    stats = {n: EligibilityStats(n) for n in names}
    users: dict[str, set[str]] = defaultdict(set)
    approve_h: dict[str, list[float]] = defaultdict(list)
    for r in reqs:
        s = stats[r.eligibility]
        s.requests += 1
        s.approved += r.status in APPROVED
        s.denied += r.status == "denied"
        s.lapsed += r.status == "lapsed"
        s.breakglass += r.kind == BREAKGLASS
        users[r.eligibility].add(r.requester)
        if r.status in APPROVED and r.layers > 0 and r.decided_at is not None:
            approve_h[r.eligibility].append((r.decided_at - r.created_at).total_seconds() / HOUR)
    durations: dict[str, list[float]] = defaultdict(list)
    for elig, start, end in spans:
        s = stats.setdefault(elig, EligibilityStats(elig))
        s.hours_granted += _overlap_h(start, end, since, until)
        if start >= since:
            durations[elig].append((end - start).total_seconds() / HOUR)
    period_h = (until - since).total_seconds() / HOUR
    for s in stats.values():
        s.users = len(users[s.name])
        s.hours_granted = round(s.hours_granted, 2)
        s.median_duration_h, s.median_approve_h = _median(durations[s.name]), _median(approve_h[s.name])
        if s.name in base:
            s.baseline_members, s.standing_hours = base[s.name], round(base[s.name] * period_h, 2)
            s.reduction_pct = _reduction(s.hours_granted, s.standing_hours)
    review = Review(since, until, list(stats.values()), _unused(names, last_use, until, unused_days),
                    _frequent(reqs, since, until), _layers(reqs, votes, slow_after), unused_days=unused_days)
    review.total_hours = round(sum(s.hours_granted for s in stats.values()), 2)
    with_base = [s for s in stats.values() if s.standing_hours is not None]
    if with_base:
        review.total_standing_hours = round(sum(s.standing_hours or 0.0 for s in with_base), 2)
        review.total_reduction_pct = _reduction(sum(s.hours_granted for s in with_base), review.total_standing_hours)
    review.weekly = weekly(spans, sum(base.values()), since, until)
    return review


def _reduction(granted: float, standing: float) -> float | None:
    return round(100.0 * (1.0 - granted / standing), 1) if standing > 0 else None


def _unused(names: list[str], last_use: dict[str, datetime], until: datetime,
            days: int) -> list[tuple[str, datetime | None]]:
    cutoff = until - timedelta(days=days)
    return [(n, last_use.get(n)) for n in names if last_use.get(n) is None or last_use[n] < cutoff]


def _frequent(reqs: list[AccessRequest], since: datetime, until: datetime) -> list[tuple[str, int, int]]:
    workdays = set(working_days(since, until))
    days: dict[str, set[date]] = defaultdict(set)
    for r in reqs:
        if r.created_at.date() in workdays:
            days[r.requester].add(r.created_at.date())
    return sorted(((who, len(d), len(workdays)) for who, d in days.items() if len(d) * 2 > len(workdays)),
                  key=lambda t: (-t[1], t[0]))


def _layers(reqs: list[AccessRequest], votes: list[ApprovalVote], slow_after: timedelta) -> list[SlowLayer]:
    by_req: dict[str, dict[int, list[ApprovalVote]]] = defaultdict(lambda: defaultdict(list))
    for v in votes:
        by_req[v.request_id][v.layer].append(v)
    waits: dict[tuple[str, int], list[float]] = defaultdict(list)
    for r in reqs:
        opened = r.created_at
        for layer in sorted(by_req.get(r.id, {})):
            layer_votes = by_req[r.id][layer]
            closed = max(v.at for v in layer_votes)
            waits[(r.eligibility, layer)].append((closed - opened).total_seconds() / HOUR)
            opened = max((v.at for v in layer_votes if v.decision == "approve"), default=closed)
    out = [SlowLayer(e, n, m, len(w), m > slow_after.total_seconds() / HOUR)
           for (e, n), w in waits.items() if (m := _median(w)) is not None]
    return sorted(out, key=lambda s: (-s.median_h, s.eligibility, s.layer))


def weekly(spans: list[tuple[str, datetime, datetime]], baseline_members: int, since: datetime,
           until: datetime) -> list[tuple[date, float, float]]:
    """Per ISO week (Monday) touched by the period: granted hours and standing-baseline hours in it."""
    start = datetime.combine(since.date() - timedelta(days=since.weekday()), datetime.min.time(), since.tzinfo)
    out = []
    while start < until:
        end = start + timedelta(days=7)
        granted = sum(_overlap_h(s, e, max(start, since), min(end, until)) for _, s, e in spans)
        out.append((start.date(), round(granted, 2), round(baseline_members * _overlap_h(start, end, since, until), 2)))
        start = end
    return out
