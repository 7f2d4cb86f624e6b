"""What only the JIT administrators (policy ``admins``) may do: see everything open, revoke, retry.

Every method checks the actor against the policy's admins *now* (through the directory) before it
touches anything, raises ``NotAdmin`` (a PolicyViolation, safe to show) otherwise, and leaves an event
in the audit chain when it succeeds.

Each membership of an admin group the identity provider states is kept in the database (``kv``, with
when it was read), at every read and every ``REFRESH_EVERY`` by the worker. When the provider cannot
answer for a transient reason (an outage, throttling), that last known membership decides if it is at
most ``settings.admin_outage_max_age`` old, and the answer says so with its age (``AdminCheck.note``):
an outage is when administrators need their tools. Any other failure (the group was deleted, jitbot may
not read it) never falls back: nobody is an administrator through that group.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select

from bot.domain.durations import format_duration
from bot.domain.requests import BREAKGLASS, EXTENSION, PolicyViolation, Status
from bot.services import kvstate, notices
from bot.services.access.grants import GrantService
from bot.services.runtime import Runtime
from connectors.base import ConnectorError, NotFound, RateLimited, Transient
from storage.tables import AccessRequest, Grant

log = logging.getLogger(__name__)

OPEN = (Status.PENDING.value, Status.APPROVED.value, Status.FAILED.value)
# Each admin group's membership is read and stored this often (once across replicas), whatever is asked.
REFRESH_EVERY = timedelta(minutes=15)
REFRESH_KEY = "admin_groups:schedule"


def _key(connector: str, group: str) -> str:
    return f"admin_group:{connector}:{group}"[:128]


class NotAdmin(PolicyViolation):
    def __init__(self) -> None:
        super().__init__("Only JIT administrators can do that.")


@dataclass(frozen=True)
class AdminCheck:
    email: str
    # Set when the identity provider could not answer and the last known membership decided.
    note: str | None = None


@dataclass(frozen=True)
class OpenItem:
    request: AccessRequest
    why: str  # pending approval | waiting to be granted | grant failed | break-glass unreviewed


class AdminService:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.grants = GrantService(rt)

    async def require_admin(self, email: str) -> str:
        return (await self.check_admin(email)).email

    async def check_admin(self, email: str) -> AdminCheck:
        """Whether ``email`` is one of the policy's admins now, or NotAdmin. A group the identity provider
        cannot list *for a transient reason* (an outage, throttling) is read from its last known membership
        when that is at most ``settings.admin_outage_max_age`` old (the check's ``note`` says how old); any
        other failure (the group is gone, jitbot may not read it), an older copy or none at all refuses,
        saying why."""
        rt, email = self.rt, email.strip().lower()
        policy, now = rt.policy, rt.clock.now()
        if email in policy.admins.users:
            return AdminCheck(email)
        max_age = policy.settings.admin_outage_max_age
        notes: list[str] = []
        unknown: list[str] = []  # no answer (an outage), and no stored membership young enough
        refused: list[str] = []  # an answer that is no membership: the group is gone, or may not be read
        for group in policy.admins.groups:
            key = _key(policy.directory_connector, group)
            try:
                members = await rt.directory.group_members(policy, group)
            except (Transient, RateLimited) as exc:
                async with rt.db.sessions() as session:
                    seen = await kvstate.read(session, key)
                if seen is None:
                    log.warning("admin check: group %s could not be read (%s) and no membership is stored", group, exc)
                    unknown.append(f"{group} (no earlier answer is stored)")
                    continue
                seen_age = now - datetime.fromisoformat(seen["at"])
                age = format_duration(seen_age)
                if seen_age > max_age:
                    log.warning("admin check: group %s could not be read (%s); its stored membership, seen %s ago, "
                                "is older than settings.admin_outage_max_age (%s) and is not used", group, exc, age,
                                format_duration(max_age))
                    unknown.append(f"{group} (its last known membership is {age} old, older than the "
                                   f"{format_duration(max_age)} settings.admin_outage_max_age allows)")
                    continue
                log.warning("admin check: group %s could not be read (%s); using its membership as seen %s ago",
                            group, exc, age)
                notes.append(f"the identity provider did not answer, so the membership of {group} "
                             f"as last seen {age} ago was used")
                if email in seen["members"]:
                    return AdminCheck(email, note=notes[-1])
                continue
            except ConnectorError as exc:  # not an outage: the group is gone, or jitbot may not read it
                log.error("admin check: group %s could not be read (%s: %s); nobody is an admin through it",
                          group, type(exc).__name__, exc)
                if isinstance(exc, NotFound):
                    await self._remember(key, frozenset(), now)  # gone: no one is an admin through it
                refused.append(f"{group} ({exc.user_message})")
                continue
            await self._remember(key, members, now)
            if email in members:
                return AdminCheck(email)
        if unknown or refused:
            why = [f"the identity provider did not answer for {'; '.join(unknown)}"] if unknown else []
            why += [f"the identity provider refused to list {'; '.join(refused)}"] if refused else []
            raise PolicyViolation(f"jitbot could not check that you are a JIT administrator: {', and '.join(why)}. "
                                  "Try again later, or ask an administrator named in the policy's admins.users.")
        if notes:
            raise PolicyViolation(f"Only JIT administrators can do that ({'; '.join(notes)}).")
        raise NotAdmin()

    async def refresh_if_due(self) -> int | None:
        """Every ``REFRESH_EVERY`` (once across replicas) read each admin group and store its membership, so
        that the copy an outage falls back on is recent, and someone removed from the group leaves it
        within that time whether or not anyone used an admin command. Returns how many groups were read,
        or None when it was not this replica's turn."""
        rt = self.rt
        if not rt.policy.admins.groups:
            return None
        if not await kvstate.take_turn(rt.db, REFRESH_KEY, now=rt.clock.now(), every=REFRESH_EVERY,
                                       by=rt.instance_id):
            return None
        return await self.refresh()

    async def refresh(self) -> int:
        """Read every admin group now and store what the identity provider said (see ``refresh_if_due``)."""
        rt, policy = self.rt, self.rt.policy
        read = 0
        for group in policy.admins.groups:
            key, now = _key(policy.directory_connector, group), rt.clock.now()
            try:
                members = await rt.directory.group_members(policy, group)
            except NotFound:
                members = frozenset()  # the group is gone: no one is an admin through it
            except ConnectorError as exc:
                log.warning("admin groups: %s could not be read (%s); its stored membership is kept", group, exc)
                continue
            await self._remember(key, members, now)
            read += 1
        return read

    async def _remember(self, key: str, members: frozenset[str], now: datetime) -> None:
        ttl = self.rt.policy.settings.membership_cache_ttl

        def changed(current: kvstate.Value | None) -> kvstate.Value | None:
            if current is not None and set(current["members"]) == members \
                    and timedelta(0) <= now - datetime.fromisoformat(current["at"]) < ttl:
                return None  # the same, and recent: no write
            return {"members": sorted(members), "at": now.isoformat()}

        await kvstate.compare_and_set(self.rt.db, key, changed)

    async def pending(self, *, actor: str, limit: int = 50) -> list[OpenItem]:
        """Requests waiting on someone (approval, grant, failed grant) and unreviewed break-glass uses."""
        actor = await self.require_admin(actor)
        async with self.rt.db.sessions() as session:
            stmt = (select(AccessRequest).where(or_(
                AccessRequest.status.in_(OPEN),  # type: ignore[attr-defined]
                (AccessRequest.kind == BREAKGLASS) & AccessRequest.reviewed_at.is_(None)),  # type: ignore[union-attr]
                ~((AccessRequest.kind == EXTENSION) & (AccessRequest.status == Status.APPROVED.value)))  # applied
                .order_by(AccessRequest.created_at).limit(limit))  # type: ignore[arg-type]
            rows = list((await session.execute(stmt)).scalars().all())
        items = [OpenItem(r, _why(r)) for r in rows]
        now = self.rt.clock.now()
        async with self.rt.db.transaction() as session:
            await notices.record(self.rt, session, at=now, kind="admin_pending_listed", actor=actor, req=None,
                                 snap=None, detail={"count": len(items)},
                                 text=f"{actor} listed {len(items)} open request(s)")
        return items

    async def revoke(self, *, actor: str, request_id: str, origin: dict[str, str] | None = None) -> Grant:
        """End someone's active access now (the worker carries out the revocation). ``origin`` (e.g. the
        command line's OS user and host) goes into the audit event beside the actor."""
        check = await self.check_admin(actor)
        return await self.grants.end_early(request_id=request_id, actor=check.email, reason="revoked",
                                           as_admin=True, origin=_with_note(origin, check))

    async def retry(self, *, actor: str, request_id: str, origin: dict[str, str] | None = None) -> Grant:
        """Try a FAILED grant again."""
        check = await self.check_admin(actor)
        return await self.grants.retry_failed(request_id=request_id, actor=check.email,
                                              origin=_with_note(origin, check))


def _with_note(origin: dict[str, str] | None, check: AdminCheck) -> dict[str, str] | None:
    if check.note is None:
        return origin
    return {**(origin or {}), "authorised_by": check.note}


def _why(req: AccessRequest) -> str:
    if req.status == Status.PENDING.value:
        return f"waiting for approval (layer {req.layer} of {req.layers})"
    if req.status == Status.APPROVED.value:
        return "approved, waiting to be granted" + (f" at {req.starts_at:%Y-%m-%d %H:%M} UTC" if req.starts_at
                                                    else "")
    if req.status == Status.FAILED.value:
        return "grant failed — retry with /jit admin retry"
    return f"break-glass use ({req.status}), not reviewed yet"
