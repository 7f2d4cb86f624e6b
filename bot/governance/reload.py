"""``serve`` keeps the running policy in step with the file: applied on start and on SIGHUP.

A valid changed file is applied (``policy_applied`` in the audit log) and swapped into the runtime in
place; an invalid one is refused, the last good policy stays, and the audit channel is told why.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import replace
from pathlib import Path

from bot.bootstrap import build_connectors
from bot.governance.applied import apply_policy, read_applied
from bot.policy_check import check_policy
from bot.policy_file import LoadedPolicy, PolicyError, parse_policy
from bot.services.notices import alert
from bot.services.runtime import Runtime
from connectors.base import Connector

log = logging.getLogger(__name__)


async def refuse(rt: Runtime, path: str, problems: list[str]) -> None:
    """Tell the audit channel (an ``alert``) that the file at ``path`` was not applied, and why."""
    text = (f"Policy file {path} was NOT applied; the last good policy ({rt.loaded.sha256[:12]}) stays live. "
            "Problems:\n" + "\n".join(f"• {p}" for p in problems[:20]))
    async with rt.db.transaction() as session:
        alert(session, at=rt.clock.now(), snap=None, text=text)
    rt.wake.set()


def last_good(database_policy_text: str | None, path: str) -> LoadedPolicy | None:
    """The policy last applied to the database, when its text was kept and still parses."""
    if not database_policy_text:
        return None
    try:
        return replace(parse_policy(database_policy_text, source=f"{path} (last applied)"), path=path)
    except PolicyError:
        return None


class PolicyReloader:
    def __init__(self, rt: Runtime, path: str, *, actor: str = "jitbot serve") -> None:
        self.rt, self.path, self.actor = rt, path, actor
        self._lock = asyncio.Lock()

    async def reload(self) -> bool:
        """Load the file; apply and swap it in when valid (True), or refuse it and alert (False)."""
        async with self._lock:
            try:
                loaded = await check_policy(self.path)
            except PolicyError as exc:
                log.error("policy %s refused: %s", self.path, exc)
                await refuse(self.rt, self.path, exc.problems)
                return False
            try:
                connectors = build_connectors(loaded, self.rt.db)
            except Exception as exc:  # a connector that cannot be built must not replace a working one
                log.error("policy %s refused: %s", self.path, exc)
                await refuse(self.rt, self.path, [f"connectors: {' '.join(str(exc).split())}"])
                return False
            plan = await apply_policy(self.rt.db, loaded, actor=self.actor, now=self.rt.clock.now())
            if plan is not None:
                log.info("policy %s applied: %s", loaded.sha256[:12], plan.summary())
            await self._swap(loaded, connectors)
            self.rt.wake.set()
            return True

    async def _swap(self, loaded: LoadedPolicy, fresh: dict[str, Connector]) -> None:
        old_settings, new_settings = self.rt.policy.connectors, loaded.policy.connectors
        retired: list[Connector] = []
        for name, connector in fresh.items():
            if name in self.rt.connectors and old_settings.get(name) == new_settings.get(name):
                await connector.aclose()
                continue
            if name in self.rt.connectors:
                retired.append(self.rt.connectors[name])
            self.rt.connectors[name] = connector
        for name in [n for n in self.rt.connectors if n not in fresh]:
            retired.append(self.rt.connectors.pop(name))
        self.rt.loaded = loaded
        self.rt.directory.invalidate()
        for connector in retired:
            await connector.aclose()

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Reload on SIGHUP."""
        tasks: set[asyncio.Task[bool]] = set()

        def on_hup() -> None:
            task = loop.create_task(self.reload())
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hup)


async def startup_policy(database_url: str, path: str) -> tuple[LoadedPolicy | None, list[str]]:
    """At start: the file when all of it is usable (bot/policy_check.py), else the policy last applied to
    the database (with the file's problems, to be reported once the runtime is up); None when there is
    neither. Nothing is created or migrated here: a database that does not exist yet, or has no applied
    policy, has no last good policy."""
    try:
        return await check_policy(path), []
    except PolicyError as exc:
        problems = exc.problems
    return last_good(await _applied_text(database_url), path), problems


async def _applied_text(database_url: str) -> str | None:
    """The text of the policy last applied to the database, read without creating or migrating it."""
    from sqlalchemy.exc import SQLAlchemyError

    from storage.db import Database

    prefix = "sqlite+aiosqlite:///"
    if database_url.startswith(prefix) and ":memory:" not in database_url \
            and not Path(database_url[len(prefix):]).exists():
        return None  # opening it would create the file
    db = Database(database_url)
    try:
        return (await read_applied(db)).text
    except (SQLAlchemyError, OSError) as exc:  # no schema yet, or no database to reach: nothing to fall back to
        log.warning("no last applied policy in the database: %s", " ".join(str(exc).split())[:200])
        return None
    finally:
        await db.dispose()
