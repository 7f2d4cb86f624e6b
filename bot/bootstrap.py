"""Build the runtime (database, policy, connectors, services) from settings."""

from __future__ import annotations

from bot.policy_file import LoadedPolicy
from bot.services.access.memberships import DatabaseMembershipStore
from bot.services.background.clock_guard import ClockGuard
from bot.services.clock import Clock, SystemClock
from bot.services.directory import Directory
from bot.services.runtime import Runtime
from connectors.base import Connector
from connectors.registry import build_connector
from connectors.resilience import ResilientConnector
from storage.db import Database


def build_connectors(loaded: LoadedPolicy, db: Database) -> dict[str, Connector]:
    """Every connector named in the policy, wrapped with timeouts, pacing and bounded retries."""
    store = DatabaseMembershipStore(db)
    out: dict[str, Connector] = {}
    for name, settings in loaded.policy.connectors.items():
        raw = build_connector(name, settings, store=store)
        if settings.get("type") == "memory":
            out[name] = raw
            continue
        rate = settings.get("rate_per_second")
        out[name] = ResilientConnector(raw, timeout=float(settings.get("timeout", 15)),
                                       max_concurrency=int(settings.get("max_concurrency", 8)),
                                       max_attempts=2, rate_per_second=float(rate) if rate else None)
    return out


async def build_runtime(loaded: LoadedPolicy, database_url: str, *, clock: Clock | None = None,
                        migrate: bool = True, instance_id: str | None = None, pool_size: int = 30) -> Runtime:
    db = Database(database_url, pool_size=pool_size)
    if migrate:
        await db.migrate()
    measured = clock is None  # the system clock: held to the database's (an injected one is the caller's)
    clock = clock or SystemClock()
    connectors = build_connectors(loaded, db)
    rt = Runtime(db=db, clock=clock, loaded=loaded, connectors=connectors, directory=Directory(connectors, clock))
    if instance_id:  # JITBOT_INSTANCE_ID: the owner of this process's claims, stable across restarts
        rt.instance_id = instance_id
    if measured:
        rt.clock_guard = ClockGuard(db, clock, instance=rt.instance_id)
    return rt


async def close_runtime(rt: Runtime) -> None:
    for connector in rt.connectors.values():
        await connector.aclose()
    await rt.context.aclose()
    await rt.db.dispose()
