"""The connector boundary: one small protocol every identity provider implements.

Exception tree::

    ConnectorError                 root; ``user_message`` is safe to show, ``str()`` is log detail
    ├── ConfigError                the connector's settings are wrong (never retried)
    ├── NotFound                   user / group / role does not exist (never retried)
    ├── PermissionDenied           credentials lack a permission, or are rejected (never retried)
    ├── IndirectMembership         revoke: the user holds the target only through a nested group,
    │                              which jitbot does not change (never retried)
    ├── AccountInactive            grant: the account is suspended or deprovisioned (never retried)
    ├── RateLimited(retry_after)   the provider asked us to slow down (retried after ``retry_after``)
    └── Transient                  5xx, timeout, connection error (retried with backoff)

Idempotency: ``grant`` of an existing membership and ``revoke`` of a missing one succeed.
No message of any error may contain a secret.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable


class ConnectorError(Exception):
    """Root of every connector error."""

    retryable: bool = False

    def __init__(self, message: str, *, user_message: str | None = None) -> None:
        super().__init__(message)
        self.user_message = user_message or "The identity provider refused the request."


class ConfigError(ConnectorError):
    """The connector's configuration is invalid."""


class NotFound(ConnectorError):
    """A user, group or role does not exist at the provider."""


class PermissionDenied(ConnectorError):
    """The provider rejected our credentials or they lack a permission."""


class IndirectMembership(ConnectorError):
    """``revoke`` found no direct membership to remove, yet the user still holds the target through a
    nested group: nothing jitbot removes ends that access, so the revoke is not a success."""


class AccountInactive(ConnectorError):
    """``grant`` refused: the account at the provider is suspended or deprovisioned, and jitbot never
    grants access to such an account (``user_message`` says so to the requester)."""


class RateLimited(ConnectorError):
    """The provider throttled us; try again after ``retry_after`` seconds."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float, user_message: str | None = None) -> None:
        super().__init__(message, user_message=user_message)
        self.retry_after = max(0.0, float(retry_after))


@dataclass(slots=True)
class Budget:
    """What the provider said of its rate limit in an answer: calls left in the window, and seconds until
    the window resets (Okta's ``X-Rate-Limit-Remaining`` / ``-Reset`` on every answer)."""

    remaining: int | None = None
    reset_in: float = 0.0


# Set by ``ResilientConnector`` around each call; a connector that reads a budget in an answer fills it in
# (``report_budget``). A holder, not a value: ``asyncio.wait_for`` runs the call in a task of its own.
RATE_BUDGET: ContextVar[Budget | None] = ContextVar("rate_budget", default=None)


def report_budget(remaining: int, reset_in: float) -> None:
    """Tell the wrapper around this call what the provider's answer said of its budget."""
    box = RATE_BUDGET.get()
    if box is not None:
        box.remaining, box.reset_in = remaining, max(0.0, reset_in)


class Transient(ConnectorError):
    """A temporary failure (5xx, timeout, connection refused)."""

    retryable = True


class TargetKind(StrEnum):
    GROUP = "group"
    ROLE = "role"


@dataclass(frozen=True, slots=True)
class Target:
    """What a grant gives: a group or role, named by the provider's id or name."""

    kind: TargetKind
    id: str

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.id}"


def parse_target_ref(ref: str) -> Target:
    """``"role:123"`` → a role target; ``"group:x"`` or a bare ``"x"`` → a group target."""
    kind, sep, ident = ref.partition(":")
    if sep and kind in (TargetKind.GROUP.value, TargetKind.ROLE.value):
        return Target(kind=TargetKind(kind), id=ident)
    return Target(kind=TargetKind.GROUP, id=ref)


def members_ref(target: Target) -> str:
    """What ``Connector.list_members`` takes for ``target``: a group's bare id or name, or ``role:<id>``.

    Group-based providers (Okta, Entra, ...) look a bare reference up as an id or name; ``group:<id>``
    would be taken as a name and not be found.
    """
    return target.id if target.kind is TargetKind.GROUP else str(target)


@dataclass(frozen=True, slots=True)
class IdpUser:
    """A user at the identity provider.

    ``direct`` is only meaningful in ``list_members``: False for a member who holds the group only
    through a nested group (Google), a membership that removing the user from this group does not end.
    ``active`` is False for an account the provider says is suspended, deactivated or disabled (where the
    connector reads it; see each connector): such a person counts in no group for jitbot (requestors,
    approvers, delegates, admins). Neither takes part in comparisons: the same account is the same
    ``IdpUser``."""

    id: str
    email: str
    display_name: str = ""
    direct: bool = field(default=True, compare=False)
    active: bool = field(default=True, compare=False)


@dataclass(frozen=True, slots=True)
class Check:
    """One line of ``connector.check()``: ``message`` tells a person what to do."""

    name: str
    ok: bool
    message: str = ""


@dataclass(frozen=True, slots=True)
class Usage:
    """What the policy uses a connector for, so that ``check`` asks for the permissions those uses need.

    Each field names the policy entries behind a use (for the message of a failed check): ``grants`` the
    eligibilities that grant through the connector, ``sessions`` those of them with ``terminate_sessions``,
    ``sign_ins`` the recovery accounts whose sign-ins are read from it; ``directory`` whether it is the
    policy's directory (people and groups are looked up there). The default: reading users and groups only."""

    grants: tuple[str, ...] = ()
    sessions: tuple[str, ...] = ()
    sign_ins: tuple[str, ...] = ()
    directory: bool = False


READ_ONLY = Usage()  # ``check()`` without a policy: credentials and reading users and groups


def named(items: Sequence[str], noun: str = "", limit: int = 3) -> str:
    """``a, b, c`` or ``a, b, c and 2 more``, after ``noun`` in the singular or plural (``eligibility a``,
    ``eligibilities a, b``): the policy entries a check line names."""
    shown = ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")
    if not noun:
        return shown
    plural = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{noun if len(items) == 1 else plural} {shown}"


@dataclass(frozen=True, slots=True)
class GrantResult:
    """What ``grant`` did. ``added`` is False when the user already was a member (standing access)."""

    added: bool
    detail: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Connector(Protocol):
    """Required capabilities of an identity-provider connector."""

    name: str

    async def check(self, usage: Usage = ...) -> list[Check]:
        """Config, credentials, reachability, and the permissions that ``usage`` needs, each as a ``Check``."""
        ...

    async def find_user(self, email: str) -> IdpUser | None:
        """The user whose login / primary email is ``email``, or None."""
        ...

    async def list_members(self, group: str) -> list[IdpUser]:
        """Every member of ``group`` (a group id or name, or ``role:<id>`` for role-based providers)."""
        ...

    async def grant(
        self, user: IdpUser, target: Target, *, grant_id: str, expires_at: datetime
    ) -> GrantResult:
        """Make ``user`` a member of ``target``. Idempotent."""
        ...

    async def revoke(self, user: IdpUser, target: Target, *, grant_id: str) -> None:
        """Remove ``user`` from ``target``. Idempotent: a missing membership is success."""
        ...

    async def is_member(self, user: IdpUser, target: Target) -> bool:
        """Whether ``user`` currently holds ``target``."""
        ...

    async def aclose(self) -> None:
        """Release sessions and pools."""
        ...


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """A group at the provider; ``member_count`` when the provider tells it without listing members."""

    id: str
    name: str
    member_count: int | None = None


@runtime_checkable
class GroupLister(Protocol):
    """Optional capability: every group at the provider (used by ``jitbot discover``)."""

    async def list_groups(self) -> list[GroupInfo]: ...


def group_lister(connector: object) -> GroupLister | None:
    """``connector`` as a ``GroupLister`` if it (or the connector it wraps, ``.inner``) can list groups."""
    inner = getattr(connector, "inner", connector)
    if not isinstance(inner, GroupLister):
        return None
    return connector if isinstance(connector, GroupLister) else inner


@runtime_checkable
class MembershipReader(Protocol):
    """Optional capability: which of some groups one user belongs to, read from the user's side.

    Answers "is this person in G?" at a cost that does not grow with G: the directory asks it on the way
    to a modal, where listing a 100,000-member group is not an option. ``among`` names groups as the
    policy does (name or id); the answer is the subset of ``among`` the user is a member of. None: the
    provider cannot tell in one read — ask ``is_member`` per group instead."""

    async def groups_of(self, user: IdpUser, among: Sequence[str]) -> frozenset[str] | None: ...


def membership_reader(connector: object) -> MembershipReader | None:
    """``connector`` as a ``MembershipReader`` if it (or the connector it wraps, ``.inner``) reads a user's
    groups; the wrapper is preferred so that the call gets its timeouts and retries."""
    inner = getattr(connector, "inner", connector)
    if not isinstance(inner, MembershipReader):
        return None
    return connector if isinstance(connector, MembershipReader) else inner


@runtime_checkable
class SessionTerminator(Protocol):
    """Optional capability: end a user's sign-in sessions (used on revoke when the policy asks)."""

    async def terminate_sessions(self, user: IdpUser) -> None: ...


def session_terminator(connector: object) -> SessionTerminator | None:
    """``connector`` as a ``SessionTerminator`` if it (or the connector it wraps, ``.inner``) can end sessions.
    A wrapper (``ResilientConnector``) is preferred so that the call gets its timeouts and retries."""
    inner = getattr(connector, "inner", connector)
    if not isinstance(inner, SessionTerminator):
        return None
    return connector if isinstance(connector, SessionTerminator) else inner


@dataclass(frozen=True, slots=True)
class SignIn:
    """One sign-in of an account, as the provider's log records it."""

    id: str  # the provider's event id
    account: str
    at: datetime
    ip: str | None = None
    client: str | None = None  # user agent or application
    outcome: str | None = None  # e.g. SUCCESS / FAILURE
    detail: str = ""  # location, display message


@runtime_checkable
class SignInLog(Protocol):
    """Optional capability: an account's sign-ins, read incrementally (recovery-account monitoring).

    ``cursor`` is the opaque string the previous call returned (None the first time: read from ``start``).
    Events come oldest first; passing the returned cursor next time yields only later events."""

    async def sign_ins(self, account: str, cursor: str | None, *, start: datetime) -> tuple[list[SignIn], str]: ...


def sign_in_log(connector: object) -> SignInLog | None:
    """``connector`` (or the connector it wraps, ``.inner``) as a ``SignInLog``, if it reads sign-ins."""
    for candidate in (connector, getattr(connector, "inner", connector)):
        if isinstance(candidate, SignInLog):
            return candidate
    return None
