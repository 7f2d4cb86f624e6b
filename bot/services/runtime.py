"""The wiring every service shares: database, clock, live policy, connectors, directory."""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from bot.domain.policy import Eligibility, Policy
from bot.policy_file import LoadedPolicy
from bot.services.clock import Clock
from bot.services.context_clients import ContextClients
from bot.services.directory import Directory
from bot.services.policy_version import Follower
from connectors.base import Connector
from storage.db import Database

_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"


def new_id(prefix: str) -> str:
    """A short random id people can read out loud: ``R-7F3K9Q2A``."""
    return prefix + "-" + "".join(secrets.choice(_ALPHABET) for _ in range(8))


class SkewGuard(Protocol):
    ok: bool
    skew: timedelta | None

    async def check(self) -> bool: ...


@dataclass
class Runtime:
    db: Database
    clock: Clock
    loaded: LoadedPolicy
    connectors: dict[str, Connector]
    directory: Directory
    # Stable name of this replica (hostname by default): claims carry it, so that a restarted replica
    # frees its own claims at once instead of waiting for their leases to run out.
    instance_id: str = field(default_factory=socket.gethostname)
    # Set whenever a grant or a revocation became due now, so that the worker does not wait for its next
    # tick; its pass then looks at those only (bot/services/background/worker.py), the rest comes with the tick.
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    # Set by a running worker (GrantService.adopt): a grant approved in this process is claimed by the
    # approving transaction and handed to it after the commit, instead of a wake and a pass's claim.
    grant_taker: Callable[[str], None] | None = None
    # The applied policy version ``loaded`` is (bot/services/policy_version.py), and what loads a newer one
    # when the database has it. Without a follower (tests' stacks, the playground) nothing is checked.
    policy_version: int = 0
    follower: Follower | None = None
    # The skew bound between this replica's clock and the database's (bot/services/background/clock_guard.py): the
    # worker does nothing judged by time while it is exceeded. None: not measured (tests, the playground).
    clock_guard: SkewGuard | None = None
    # Delivered outbox messages older than this are deleted (bot/services/outbox/prune.py); None keeps them.
    outbox_retention: timedelta | None = timedelta(days=14)
    # PagerDuty and Jira clients (approval context), built from the policy when first used.
    context: ContextClients = field(default_factory=ContextClients)

    @property
    def decision_version(self) -> int | None:
        """The version a decision checked now is checked against (None: no version is followed)."""
        return self.policy_version if self.follower is not None else None

    @property
    def policy(self) -> Policy:
        return self.loaded.policy

    def eligibility(self, name: str) -> Eligibility | None:
        return self.policy.eligibility(name)

    def connector(self, name: str) -> Connector:
        return self.connectors[name]
