"""``GET /metrics``: the Prometheus exposition, built with ``prometheus_client`` on each scrape.

The figures come from the database, so every replica reports the same totals. Every labelled series is
present from the start with 0 (an alert on ``jitbot_requests{status="failed"}`` can fire on the first
failure). When the database does not answer (within ``DB_TIMEOUT_S``) the scrape still succeeds with
``jitbot_database_up 0`` and the process-local series only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlmodel import col

from bot.domain.requests import Status
from bot.events.metrics import sink_lag
from bot.services import policy_version
from bot.services.runtime import Runtime
from storage.tables import AccessRequest, Grant, KeyValue, OutboxMessage, WorkerHeartbeat

log = logging.getLogger(__name__)

DB_TIMEOUT_S = 3.0
GRANT_STATES = ("granting", "active", "revoking", "ended")
OPEN_GRANT = ("active", "revoking")


@dataclass
class DbFigures:
    requests: dict[str, int] = field(default_factory=dict)
    grants: dict[str, int] = field(default_factory=dict)
    overdue: int = 0
    oldest_overdue_s: float = 0.0
    outbox_pending: int = 0
    grants_retrying: int = 0
    heartbeat_age_s: float | None = None
    applied_version: int = 0  # the fleet's policy version (bot/services/policy_version.py)
    replica_versions: dict[str, int] = field(default_factory=dict)  # worker id → the version it runs


async def oldest_overdue_s(session: object, now: datetime) -> float:
    """Seconds since the earliest ``expires_at`` of a grant still active or revoking past it (0 if none)."""
    first = (await session.execute(select(func.min(col(Grant.expires_at))).where(  # type: ignore[attr-defined]
        col(Grant.status).in_(OPEN_GRANT), col(Grant.expires_at) < now))).scalar()
    return max(0.0, (now - first).total_seconds()) if first else 0.0


async def applied_version(session: object) -> int:
    """The policy version applied for the fleet (``policy apply`` / a reload raises it)."""
    value = (await session.execute(select(col(KeyValue.value)).where(  # type: ignore[attr-defined]
        col(KeyValue.key) == policy_version.KEY))).scalar()
    return policy_version.version_of(value)


async def read_figures(rt: Runtime) -> DbFigures:
    """The database's figures; raises what the database raises."""
    now, figures = rt.clock.now(), DbFigures()
    async with rt.db.sessions() as session:
        figures.requests = {str(s): int(n) for s, n in (await session.execute(
            select(col(AccessRequest.status), func.count()).group_by(col(AccessRequest.status)))).all()}
        figures.grants = {str(s): int(n) for s, n in (await session.execute(
            select(col(Grant.status), func.count()).group_by(col(Grant.status)))).all()}
        figures.overdue = int((await session.execute(select(func.count()).select_from(Grant).where(
            col(Grant.status).in_(OPEN_GRANT), col(Grant.expires_at) < now))).scalar() or 0)
        figures.oldest_overdue_s = await oldest_overdue_s(session, now)
        figures.outbox_pending = int((await session.execute(select(func.count()).select_from(OutboxMessage).where(
            col(OutboxMessage.status) == "pending"))).scalar() or 0)
        figures.grants_retrying = int((await session.execute(select(func.count()).select_from(Grant).where(
            col(Grant.status) == "granting", col(Grant.attempts) > 0))).scalar() or 0)
        beat = (await session.execute(select(func.max(col(WorkerHeartbeat.beat_at))))).scalar()
        figures.applied_version = await applied_version(session)
        figures.replica_versions = {str(w): int(v) for w, v in (await session.execute(
            select(col(WorkerHeartbeat.worker_id), col(WorkerHeartbeat.policy_version))
            .order_by(col(WorkerHeartbeat.worker_id)))).all() if v is not None}
    figures.heartbeat_age_s = max(0.0, (now - beat).total_seconds()) if beat else None
    return figures


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _labelled(name: str, doc: str, label: str, values: dict[str, int], known: Iterable[str]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=[label])
    for key in dict.fromkeys([*known, *sorted(values)]):
        family.add_metric([key], values.get(key, 0))
    return family


def families(figures: DbFigures | None, *, local: dict[str, float]) -> list[Metric]:
    """The metric families for ``figures`` (None: the database did not answer) and the process-local
    gauges ``local`` (name → value)."""
    out: list[Metric] = [_gauge("jitbot_database_up", "1 when the database answered this scrape, else 0",
                                0 if figures is None else 1)]
    if figures is not None:
        out += [
            _labelled("jitbot_requests", "Requests in each status (all time)", "status", figures.requests,
                      [s.value for s in Status]),
            _labelled("jitbot_grants", "Grants in each state", "status", figures.grants, GRANT_STATES),
            _gauge("jitbot_revocations_overdue",
                   "Grants still active or revoking past expires_at: access that should be gone", figures.overdue),
            _gauge("jitbot_revocation_oldest_overdue_seconds", "Seconds the oldest overdue revocation is late",
                   round(figures.oldest_overdue_s, 1)),
            _gauge("jitbot_outbox_pending", "Slack messages waiting to be delivered", figures.outbox_pending),
            _gauge("jitbot_grants_retrying", "Approved grants the identity provider failed at least once, "
                   "still being retried", figures.grants_retrying),
        ]
        if figures.heartbeat_age_s is not None:
            out.append(_gauge("jitbot_worker_heartbeat_age_seconds",
                              "Seconds since the latest heartbeat of any worker", round(figures.heartbeat_age_s, 1)))
        out.append(_gauge("jitbot_policy_applied_version", "The policy version applied for the fleet",
                          figures.applied_version))
        replicas = GaugeMetricFamily("jitbot_replica_policy_version", "The policy version each replica runs "
                                     "(from its heartbeat)", labels=["replica"])
        for worker, version in figures.replica_versions.items():
            replicas.add_metric([worker], version)
        out.append(replicas)
    docs = {"jitbot_slack_bot_token_refused": "1 when Slack refused this process's bot token",
            "jitbot_socket_mode_connected": "1 when this process's Socket Mode connection is up"}
    out += [_gauge(name, docs.get(name, name), value) for name, value in local.items()]
    return out


async def exposition(rt: Runtime, *, local: dict[str, float]) -> bytes:
    """The Prometheus text exposition; never raises for a database that is down or slow."""
    figures: DbFigures | None
    try:
        async with asyncio.timeout(DB_TIMEOUT_S):
            figures = await read_figures(rt)
    except Exception as exc:  # any database failure: the scrape still answers, with the database down
        log.warning("metrics: the database did not answer: %s", type(exc).__name__)
        figures = None
    registry = CollectorRegistry(auto_describe=False)
    found = families(figures, local=local)
    mine = GaugeMetricFamily("jitbot_policy_version", "The policy version this process runs", labels=["sha256"])
    mine.add_metric([rt.loaded.sha256[:12]], rt.policy_version)
    found.append(mine)
    guard = rt.clock_guard  # the database's clock minus ours (bot/services/background/clock_guard.py)
    if guard is not None and guard.skew is not None:
        found += [_gauge("jitbot_clock_skew_seconds", "The database's clock minus this process's",
                         round(guard.skew.total_seconds(), 3)),
                  _gauge("jitbot_clock_within_bound", "1 while this process's clock is within the skew bound",
                         int(guard.ok))]
    try:  # each SIEM sink's lag (bot/events/): how far its cursor is behind the audit log
        async with asyncio.timeout(DB_TIMEOUT_S):
            lags = await sink_lag(rt.db, rt.policy.event_sinks, rt.clock.now())
    except Exception:  # the database is down: jitbot_database_up says so
        lags = {}
    behind = GaugeMetricFamily("jitbot_event_sink_lag_events", "Audit events not yet sent to the sink",
                               labels=["sink"])
    late = GaugeMetricFamily("jitbot_event_sink_lag_seconds", "Age of the oldest audit event not yet sent "
                             "to the sink", labels=["sink"])
    for name, (events, seconds) in lags.items():
        behind.add_metric([name], events)
        late.add_metric([name], round(seconds, 1))
    found += [behind, late]
    registry.register(_Families(found))
    return generate_latest(registry)
