"""Claims by key: a commit tells the outbox dispatcher which order keys it left unclaimed, and the
dispatcher claims just those keys' heads — instead of a claim pass over the whole outbox per commit.

A key followed by a chain of this process needs nothing (the chain's next record claims what follows);
a paced lane usually sent by another replica is looked at once per quarter interval; any other key's
head is claimed by key. ``KeyClaims`` is a part of ``OutboxDispatcher`` (bot/services/outbox/dispatcher.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Protocol

from bot.services.clock import Clock
from bot.services.outbox import sql
from bot.services.outbox.lanes import is_lane
from bot.services.outbox.write import Claimed
from storage.core_tx import CoreTx
from storage.db import Database

log = logging.getLogger("bot.services.outbox.dispatcher")


class Cancellable(Protocol):
    def cancel(self) -> None: ...


HELD_RECHECK = 0.1  # s: a key left to another process's chain is looked at again after this (look_again)
CallLater = Callable[..., Cancellable]  # (delay, callback, *args) -> handle, like loop.call_later


class KeyClaims:
    """Claims by key, for ``OutboxDispatcher`` (which sets these attributes and defines the stubs)."""

    db: Database
    clock: Clock
    lease: timedelta
    owner: str
    lane_interval: float
    counts: Counter[str]
    _monotonic: Callable[[], float]
    _live: dict[str, int]
    _dirty: set[str]
    _recheck: set[str]
    _rechecker: asyncio.Task[None] | None
    _lane_waits: dict[str, Cancellable]
    _held_keys: set[str]
    _held_timer: Cancellable | None
    _call_later: CallLater | None
    _held_until: dict[str, float]
    _closed: bool

    def room(self) -> int:
        raise NotImplementedError

    def accept(self, claimed: list[Claimed]) -> None:
        raise NotImplementedError

    def _enter(self) -> None:
        raise NotImplementedError

    def _leave(self) -> None:
        raise NotImplementedError

    def follows(self, key: str) -> bool:
        """Whether a chain of this process is following ``key``."""
        return key in self._live

    def held_elsewhere(self, key: str) -> bool:
        """Whether ``key`` is a paced lane that another process's chain was seen holding within the last
        quarter of its interval: commits then leave its lines to that chain without asking again (every
        transaction writes an audit line). Should that chain have ended meanwhile, the next commit after
        the quarter, or the claim pass every interval, takes them — the lane posts once an interval."""
        return self._held_until.get(key, 0.0) > self._monotonic()

    def saw_held_elsewhere(self, keys: set[str]) -> None:
        if self.lane_interval > 0:
            until = self._monotonic() + self.lane_interval / 4
            self._held_until.update((k, until) for k in keys if is_lane(k))

    def notice(self, keys: list[str]) -> None:
        """A commit added messages behind an older pending message of each of ``keys`` (storage/db.py).

        A key with a chain in this process needs nothing now: the chain's next record claims what
        follows. It is marked, and if the chain ends without them (its last record ran before this
        commit), its end claims them. Any other key's head is claimed by key (cheap, however large the
        outbox), instead of a claim pass over every pending message: at once, or for a paced lane (its
        chain usually runs in another replica) once per quarter of its interval, since the lane posts at
        most once per interval anyway."""
        now_keys = []
        for key in keys:
            if key in self._live:
                self._dirty.add(key)
            elif self.lane_interval > 0 and is_lane(key):
                if key not in self._lane_waits:
                    self._enter()
                    call_later = self._call_later or asyncio.get_running_loop().call_later
                    self._lane_waits[key] = call_later(self.lane_interval / 4, self._lane_wait_over, key)
            else:
                now_keys.append(key)
        if now_keys:
            self._claim_keys(now_keys)

    def look_again(self, keys: list[str]) -> None:
        """A commit left messages of ``keys`` to another process's chain, which held each key's head
        (PostgreSQL). That chain claims them when it records its message — unless its record's claim
        ran just before this commit and did not see them; then, without a look, they waited for the
        claim pass of the next interval (an approval's message updates 0.2–0.5 s late with two
        replicas). One claim by key after ``HELD_RECHECK`` s, for all the keys left meanwhile: the other
        chain has recorded by then, or it will and will see them; either way nothing is claimed twice."""
        waiting = bool(self._held_keys)
        for key in keys:
            if key in self._live:
                self._dirty.add(key)
            else:
                self._held_keys.add(key)
        if self._held_keys and not waiting:
            self._enter()
            call_later = self._call_later or asyncio.get_running_loop().call_later
            self._held_timer = call_later(HELD_RECHECK, self._held_wait_over)

    def _held_wait_over(self) -> None:
        keys, self._held_keys, self._held_timer = self._held_keys, set(), None
        try:
            for key in keys:
                if key in self._live:  # a chain of ours took the key meanwhile
                    self._dirty.add(key)
            self._claim_keys(sorted(k for k in keys if k not in self._live))
        finally:
            self._leave()

    def _lane_wait_over(self, key: str) -> None:
        del self._lane_waits[key]
        try:
            if key in self._live:  # a chain of ours took the lane meanwhile: it takes these too
                self._dirty.add(key)
            else:
                self._claim_keys([key])
        finally:
            self._leave()

    def _claim_keys(self, keys: list[str]) -> None:
        if self._closed:  # the run loop has ended (shutdown): the next start's claim pass takes them
            return
        self._recheck.update(keys)
        if self._rechecker is None or self._rechecker.done():
            self._enter()
            self._rechecker = asyncio.create_task(self._claim_rechecks())

    async def _claim_rechecks(self) -> None:
        try:
            await self._claim_by_key()
        finally:
            self._leave()

    async def _claim_by_key(self) -> None:
        stmt = sql.CLAIM_KEYS_SQLITE if self.db.is_sqlite else sql.CLAIM_KEYS_PG
        while self._recheck:
            room = self.room()
            if room <= 0:  # the run loop claims them once chains end
                self._recheck.clear()
                self.db.outbox_ready.set()
                return
            keys, self._recheck = sorted(self._recheck), set()
            self.counts["claims by key"] += 1
            now = self.clock.now()
            lease = {"b_now": now, "b_until": now + self.lease, "b_owner": self.owner}
            lanes, others = [k for k in keys if is_lane(k)], [k for k in keys if not is_lane(k)]
            try:
                async with self.db.core_transaction() as tx:
                    rows = await tx.rows(stmt, {"b_keys": others, "b_limit": room, **lease}) if others else []
                    rows += await self._claim_lanes(tx, lanes[:max(room - len(rows), 0)], lease)
            except Exception:  # the claim pass of the run loop takes them instead
                log.exception("outbox claim by key failed")
                self.db.outbox_ready.set()
                return
            self.accept(sorted((Claimed.of(r) for r in rows), key=lambda m: m.id))
            if len(rows) >= room and set(keys) - {r.order_key for r in rows}:
                # no room for the rest: as above, the run loop claims them once chains end (dropped
                # here, they waited for the next claim pass — a whole interval)
                self.db.outbox_ready.set()

    async def _claim_lanes(self, tx: CoreTx, lanes: list[str], lease: dict[str, Any]) -> list[Any]:
        """Claim the heads of ``lanes`` that no chain holds (PostgreSQL: one claimer per lane at a time)."""
        rows: list[Any] = []
        for lane in lanes:
            if not self.db.is_sqlite:
                await tx.rows(sql.LANE_LOCK, {"k": lane})
            rows += await tx.rows(sql.CLAIM_LANE_HEAD, {"b_key": lane, **lease})
        return rows
