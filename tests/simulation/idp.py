"""The simulated identity provider: memberships in a dict, and add/remove calls that finish only when the
simulation resolves them.

It follows the ``connectors.base.Connector`` protocol as the memory connector (``connectors/memory.py``)
implements it: ``grant`` is idempotent and says whether it added the membership, ``revoke`` of a missing
membership is success, ``is_member`` / ``list_members`` / ``find_user`` answer at once (reads are not
what the simulation interleaves). Each ``grant`` / ``revoke`` becomes a ``PendingCall``: its effect and
its answer happen together when the simulation resolves it, or the call fails with a transient error
(``connectors.base.Transient``, what the real connectors raise for a 5xx or a timeout) and changes
nothing, or the IdP applies it and the answer is lost (a timeout after the change).

The expiry backstop (connectors/backstop.py): the connector has it on. An add that creates a membership
sets its expiry to the grant's ``expires_at`` (an add that finds a member changes nothing, as
``memberships.create`` answering ALREADY_EXISTS / a PIM ``adminAssign`` never given); ``move_expiry``
moves it; and the IdP removes a membership itself once its clock passes the expiry (``expire``: before
any call or read is answered, and whenever the simulation looks at the members).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from connectors.base import Check, GrantResult, IdpUser, NotFound, PermissionDenied, Target, Transient

Membership = tuple[str, str]  # (target as "group:x", user email)


class Outcome(StrEnum):
    OK = "ok"
    FAIL = "fail"  # transient error, nothing changed
    LOST = "lost"  # applied at the IdP, but the caller gets a transient error


@dataclass
class PendingCall:
    """One add or remove the IdP has received and not answered yet."""

    seq: int
    op: str  # "add" | "remove"
    membership: Membership
    grant_id: str
    future: asyncio.Future[bool] = field(repr=False)
    expires_at: datetime | None = None  # an add's expiry at the IdP (the backstop)


@dataclass(frozen=True)
class Applied:
    """What the IdP did for one call (its log): the membership changed or not, and who asked."""

    op: str
    membership: Membership
    grant_id: str
    changed: bool
    answered: bool  # the caller got a success answer


class SimIdp:
    """The IdP's state, shared by every connector object the services are built with (restarts)."""

    def __init__(self, users: Iterable[str], memberships: Iterable[Membership]) -> None:
        self.users = {u.lower() for u in users}
        self.members: set[Membership] = set(memberships)
        self.pending: list[PendingCall] = []
        self.log: list[Applied] = []
        self._seq = 0
        self.expiries: dict[Membership, datetime] = {}  # the IdP's own end of a membership (the backstop)
        self.clock: Callable[[], datetime] | None = None  # the simulation's clock, once the world sets it
        self.expired: list[tuple[Membership, datetime]] = []  # what the IdP ended itself, and when

    def expire(self) -> list[Membership]:
        """Remove every membership whose expiry the clock has passed, as the provider does on its own."""
        if self.clock is None or not self.expiries:
            return []
        now = self.clock()
        gone = sorted(m for m, at in self.expiries.items() if at <= now)
        for m in gone:
            del self.expiries[m]
            self.members.discard(m)
            self.expired.append((m, now))
            self.log.append(Applied("expire", m, "idp-expiry", True, False))
        return gone

    def apply(self, call: PendingCall, *, answered: bool) -> bool:
        self.expire()
        if call.op == "add":
            changed = call.membership not in self.members
            self.members.add(call.membership)
            if changed and call.expires_at is not None:
                self.expiries[call.membership] = call.expires_at
        else:
            changed = call.membership in self.members
            self.members.discard(call.membership)
            self.expiries.pop(call.membership, None)
        self.log.append(Applied(call.op, call.membership, call.grant_id, changed, answered))
        return changed

    def resolve(self, call: PendingCall, outcome: Outcome) -> None:
        """Answer ``call``: the caller's continuation runs when the simulation next lets tasks run."""
        self.pending.remove(call)
        if call.future.done():  # its caller is gone (a crash): nothing to answer
            return
        if outcome is Outcome.FAIL:
            call.future.set_exception(Transient(f"simulated IdP error on {call.op} #{call.seq}"))
            return
        changed = self.apply(call, answered=outcome is Outcome.OK)
        if outcome is Outcome.LOST:
            call.future.set_exception(Transient(f"simulated timeout after {call.op} #{call.seq}"))
        else:
            call.future.set_result(changed)

    def refuse(self, call: PendingCall) -> None:
        """Answer ``call`` with a permanent refusal (``PermissionDenied``, never retried): nothing changes."""
        self.pending.remove(call)
        if not call.future.done():
            call.future.set_exception(PermissionDenied(f"simulated refusal of {call.op} #{call.seq}"))

    def crash(self, applied: set[int]) -> None:
        """The process that made the pending calls died: the IdP carried out those in ``applied`` (by
        seq), never answered any of them."""
        for call in list(self.pending):
            self.pending.remove(call)
            if call.seq in applied:
                self.apply(call, answered=False)
            if not call.future.done():
                call.future.cancel()

    async def call(self, op: str, membership: Membership, grant_id: str, expires_at: datetime | None = None) -> bool:
        self.expire()
        self._seq += 1
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.pending.append(PendingCall(self._seq, op, membership, grant_id, fut, expires_at))
        return await fut


class SimConnector:
    """A ``Connector`` over ``SimIdp`` (one per service generation; the IdP outlives restarts)."""

    expiry_backstop = True  # connectors/backstop.py: the IdP ends what jitbot added at its expiry

    def __init__(self, name: str, idp: SimIdp) -> None:
        self.name = name
        self.idp = idp

    async def check(self) -> list[Check]:
        return [Check("directory", True, "simulated")]

    async def find_user(self, email: str) -> IdpUser | None:
        email = email.strip().lower()
        return IdpUser(id=email, email=email, display_name=email) if email in self.idp.users else None

    async def list_members(self, group: str) -> list[IdpUser]:
        key = group if ":" in group else f"group:{group}"
        self.idp.expire()
        return [IdpUser(id=u, email=u) for (t, u) in sorted(self.idp.members) if t == key]

    async def grant(self, user: IdpUser, target: Target, *, grant_id: str, expires_at: datetime) -> GrantResult:
        if user.id not in self.idp.users:
            raise NotFound(f"no user {user.id!r}")
        return GrantResult(added=await self.idp.call("add", (str(target), user.id), grant_id, expires_at))

    async def revoke(self, user: IdpUser, target: Target, *, grant_id: str) -> None:
        await self.idp.call("remove", (str(target), user.id), grant_id)

    async def is_member(self, user: IdpUser, target: Target) -> bool:
        self.idp.expire()
        return (str(target), user.id) in self.idp.members

    async def move_expiry(self, user: IdpUser, target: Target, *, expires_at: datetime) -> None:
        """At once (not a call the simulation holds): the extension's move of the IdP's expiry."""
        self.idp.expire()
        if (str(target), user.id) not in self.idp.expiries:
            raise NotFound(f"no membership of {user.id} in {target} with an expiry")
        self.idp.expiries[(str(target), user.id)] = expires_at

    async def aclose(self) -> None:
        return None
