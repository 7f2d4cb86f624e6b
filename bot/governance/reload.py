"""Every replica runs the policy applied to the database; ``serve`` and ``worker`` re-read their file on SIGHUP.

A valid changed file is applied (``policy_applied`` in the audit log, a new version) and swapped into
the runtime in place; an invalid one is refused, the last good policy stays, and the audit channel is
told why. Whatever applied it (this replica, another one, ``jitbot policy apply``), every replica loads
the applied version within ``FOLLOW_INTERVAL`` (``follow``), and at once when a decision finds it
behind (bot/services/policy_version.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import replace
from pathlib import Path

from bot.bootstrap import build_connectors
from bot.governance.applied import KEY as APPLIED_KEY
from bot.governance.applied import apply_versioned, read_applied, read_version
from bot.policy_check import check_policy
from bot.policy_file import LoadedPolicy, PolicyError, parse_policy
from bot.services import kvstate
from bot.services.notices import alert
from bot.services.policy_version import FOLLOW_INTERVAL, version_of
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
        self._refused_version = 0  # an applied version this replica could not load (alerted once)
        self._following: asyncio.Task[None] | None = None

    async def catch_up(self) -> int:
        """Load the applied policy when the database holds a newer version than this replica runs;
        the version run afterwards. A version that cannot be loaded here (a connector that cannot be
        built on this host) is alerted once; the replica then refuses decisions until it can."""
        async with self._lock:
            applied, _ = await read_version(self.rt.db)
            if applied <= self.rt.policy_version:
                return self.rt.policy_version
            async with self.rt.db.sessions() as session:
                value = await kvstate.read(session, APPLIED_KEY) or {}
            version, loaded = version_of(value), last_good(value.get("text"), self.rt.loaded.path)
            problem = "its text is missing or does not parse" if loaded is None else None
            connectors: dict[str, Connector] = {}
            if loaded is not None:
                try:
                    connectors = build_connectors(loaded, self.rt.db)
                except Exception as exc:
                    problem = f"connectors: {' '.join(str(exc).split())}"
            if loaded is None or problem is not None:
                if self._refused_version != version:
                    self._refused_version = version
                    log.error("applied policy version %d cannot be loaded here: %s", version, problem)
                    await refuse(self.rt, f"applied version {version}", [problem or "unknown"])
                return self.rt.policy_version
            await self._swap(loaded, connectors, version)
            log.info("policy version %d (%s) loaded from the database", version, loaded.sha256[:12])
            self.rt.wake.set()
            return version

    def follow(self, interval: float = FOLLOW_INTERVAL) -> None:
        """Read the applied version every ``interval`` seconds and load it when it is newer."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await self.catch_up()
                except asyncio.CancelledError:
                    raise
                except Exception:  # the database away: the next read tries again
                    log.exception("reading the applied policy version failed")

        self.rt.follower = self
        self._following = asyncio.get_running_loop().create_task(loop())

    async def stop_following(self) -> None:
        if self._following is not None:
            self._following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._following
            self._following = None

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
            plan, version = await apply_versioned(self.rt.db, loaded, actor=self.actor, now=self.rt.clock.now())
            if plan is not None:
                log.info("policy %s applied as version %d: %s", loaded.sha256[:12], version, plan.summary())
            await self._swap(loaded, connectors, version)
            self.rt.wake.set()
            return True

    async def _swap(self, loaded: LoadedPolicy, fresh: dict[str, Connector], version: int) -> None:
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
        self.rt.loaded, self.rt.policy_version = loaded, version  # together: no await between them
        self.rt.directory.invalidate()
        for connector in retired:
            await connector.aclose()

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Reload on SIGHUP."""
        tasks: set[asyncio.Task[bool]] = set()

        async def reload_logged() -> bool:
            try:
                return await self.reload()
            except Exception:  # the database away: the signal is logged, never fatal
                log.exception("policy reload on SIGHUP failed; the running policy stays")
                return False

        def on_hup() -> None:
            task = loop.create_task(reload_logged())
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
