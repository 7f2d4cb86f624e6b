"""One policy version for the fleet: which applied policy a decision is made under.

``jitbot policy apply`` (and a replica applying its file on start or SIGHUP) writes the applied policy
to the database with a version number that grows by one each time (kv ``policy_version``, in the same
transaction as the policy itself: bot/governance/applied.py). Every replica follows it
(bot/governance/reload.py: a read every ``FOLLOW_INTERVAL``), and a decision — a submitted request, an
approval or denial — reads the applied version in its own transaction: when the database holds a newer
version than the one the decision was checked against, the transaction is rolled back, the replica
loads the applied policy at once and the decision is checked again under it. So no decision is made
under an older version than the one applied when it was made, and an idle replica converges within
``FOLLOW_INTERVAL`` plus one read.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from sqlalchemy import select

from bot.domain.requests import PolicyViolation
from storage.core_tx import CoreTx
from storage.tables import KeyValue

KEY = "policy_version"
FOLLOW_INTERVAL = 2.0  # seconds between a replica's reads of the applied version (the stated bound is 5 s)
CATCH_UP_TRIES = 3

_KV = KeyValue.__table__  # type: ignore[attr-defined]
_VERSION = select(_KV.c.value).where(_KV.c.key == KEY)

T = TypeVar("T")


class PolicyStale(Exception):
    """The database holds a newer applied policy than the one a decision was checked against."""

    def __init__(self, applied: int, seen: int) -> None:
        super().__init__(f"policy version {applied} is applied; this decision was checked under {seen}")
        self.applied, self.seen = applied, seen


class Follower(Protocol):
    async def catch_up(self) -> int:
        """Load the applied policy when the database holds a newer version; return the version now run."""
        ...


def version_of(value: Any) -> int:
    """The version number in a kv ``policy_version`` value (a dict, or its JSON text): 0 when none."""
    if isinstance(value, str):
        value = json.loads(value)
    return int(value.get("version", 0)) if isinstance(value, dict) else 0


async def applied_version(tx: CoreTx) -> int:
    """The applied policy's version as ``tx`` reads it (0: nothing applied with a version yet)."""
    found = await tx.scalars(_VERSION)
    return version_of(found[0]) if found else 0


async def require_current(tx: CoreTx, seen: int | None) -> None:
    """Raise PolicyStale when the database's applied version is newer than ``seen``, the version the
    caller checked its decision against (None: this runtime follows no applied version, e.g. tests)."""
    if seen is None:
        return
    applied = await applied_version(tx)
    if applied > seen:
        raise PolicyStale(applied, seen)


async def under_current_policy(follower: Follower | None, attempt: Callable[[], Awaitable[T]]) -> T:
    """Run ``attempt`` (a decision that calls ``require_current`` in its transaction); when the policy it
    was checked against is no longer the applied one, catch up and run it again."""
    for _ in range(CATCH_UP_TRIES):
        try:
            return await attempt()
        except PolicyStale:
            if follower is None:
                raise
            await follower.catch_up()
    raise PolicyViolation("The access policy changed while this was being decided; please try again.")
