"""What the outbox hands its messages to: notifiers, what they answer, and how a batch is delivered.

A ``RetryLater`` from a notifier (Slack down, HTTP 429 + Retry-After) keeps a message pending until its
due time; a ``PermanentFailure`` (e.g. ``channel_not_found``) marks it dead with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class RetryLater(Exception):
    def __init__(self, reason: str, *, after: float | None = None) -> None:
        super().__init__(reason)
        self.after = after


class PermanentFailure(Exception):
    pass


@dataclass(frozen=True)
class Ref:
    """A delivered message's location, saved so that it can be updated or threaded under later."""

    request_id: str
    purpose: str
    channel: str
    ts: str
    recipient: str = ""


@dataclass(frozen=True)
class FollowUp:
    """A message a delivery hands on, written to the outbox in the transaction that records the delivery
    as sent: work split into items of its own (one per approver's copy), each retried on its own, so
    that what was done stays done."""

    order_key: str
    kind: str
    payload: dict[str, Any]


@dataclass
class Delivery:
    refs: list[Ref] = field(default_factory=list)
    follow_ups: list[FollowUp] = field(default_factory=list)


class Notifier(Protocol):
    async def deliver(self, kind: str, payload: dict[str, Any]) -> Delivery: ...


class BatchNotifier(Notifier, Protocol):
    async def deliver_batch(self, kind: str, payloads: list[dict[str, Any]]) -> Delivery:
        """Deliver several messages of one kind as one (a lane's digest)."""
        ...


async def deliver_all(notifier: Notifier, kind: str, payloads: list[dict[str, Any]]) -> Delivery:
    """One message as it is; several as one digest where the notifier can, else one after the other."""
    if len(payloads) == 1:
        return await notifier.deliver(kind, payloads[0])
    batch = getattr(notifier, "deliver_batch", None)
    if batch is not None:
        result: Delivery = await batch(kind, payloads)
        return result
    return await deliver_each(notifier, [(kind, p) for p in payloads])


def fitting(notifier: Notifier, kind: str, payloads: list[dict[str, Any]]) -> int:
    """How many of ``payloads`` (from the first) go in one post: the notifier's ``batch_fits`` if it has
    one (a digest must stay under Slack's message size), else all of them."""
    fits = getattr(notifier, "batch_fits", None)
    return max(1, min(len(payloads), fits(kind, payloads))) if fits is not None else len(payloads)


async def deliver_each(notifier: Notifier, messages: list[tuple[str, dict[str, Any]]]) -> Delivery:
    """Deliver (kind, payload) messages one after the other with ``deliver``; the refs of all of them."""
    refs: list[Ref] = []
    for kind, payload in messages:
        refs += (await notifier.deliver(kind, payload)).refs
    return Delivery(refs)


class RecordingNotifier:
    """Keeps every delivered message; for tests and headless runs."""

    def __init__(self) -> None:
        self.delivered: list[tuple[str, dict[str, Any]]] = []
        self.posts: dict[str, int] = {}  # deliveries per kind, a digest counting once

    async def deliver(self, kind: str, payload: dict[str, Any]) -> Delivery:
        return await self.deliver_batch(kind, [payload])

    async def deliver_batch(self, kind: str, payloads: list[dict[str, Any]]) -> Delivery:
        self.delivered += [(kind, p) for p in payloads]
        self.posts[kind] = self.posts.get(kind, 0) + 1
        return Delivery()

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [p for k, p in self.delivered if k == kind]
