"""The wiring every service shares: database, clock, live policy, connectors, directory."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field

from bot.domain.policy import Eligibility, Policy
from bot.policy_file import LoadedPolicy
from bot.services.clock import Clock
from bot.services.directory import Directory
from connectors.base import Connector
from storage.db import Database

_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"


def new_id(prefix: str) -> str:
    """A short random id people can read out loud: ``R-7F3K9Q2A``."""
    return prefix + "-" + "".join(secrets.choice(_ALPHABET) for _ in range(8))


@dataclass
class Runtime:
    db: Database
    clock: Clock
    loaded: LoadedPolicy
    connectors: dict[str, Connector]
    directory: Directory
    # Set whenever something became due now, so that the worker does not wait for its next tick.
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def policy(self) -> Policy:
        return self.loaded.policy

    def eligibility(self, name: str) -> Eligibility | None:
        return self.policy.eligibility(name)

    def connector(self, name: str) -> Connector:
        return self.connectors[name]
