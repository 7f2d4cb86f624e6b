"""The policy model: eligibilities, approval layers, admins. Pure: no file or network access."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, model_validator

from bot.domain.durations import format_duration, parse_duration

Duration = Annotated[
    timedelta,
    BeforeValidator(lambda v: parse_duration(v) if isinstance(v, str) else v),
    PlainSerializer(format_duration, return_type=str),
]

MAX_LAYERS = 3


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Principals(Strict):
    """A set of people: directory groups and/or user emails."""

    groups: tuple[str, ...] = ()
    users: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _normalise(self) -> Principals:
        object.__setattr__(self, "users", tuple(u.strip().lower() for u in self.users))
        return self

    def is_empty(self) -> bool:
        return not self.groups and not self.users


class ApprovalLayer(Strict):
    approvers: Principals
    min_approvals: int = Field(default=1, ge=1, le=10)
    timeout: Duration = timedelta(hours=24)

    @model_validator(mode="after")
    def _has_approvers(self) -> ApprovalLayer:
        if self.approvers.is_empty():
            raise ValueError("an approval layer needs at least one approver group or user")
        return self


class TargetSpec(Strict):
    group: str | None = None
    role: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> TargetSpec:
        if (self.group is None) == (self.role is None):
            raise ValueError("target needs exactly one of 'group' or 'role'")
        return self

    @property
    def kind(self) -> str:
        return "group" if self.group is not None else "role"

    @property
    def ref(self) -> str:
        return self.group if self.group is not None else str(self.role)


class Extension(Strict):
    allowed: bool = True
    reapproval: bool = False


class Eligibility(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")
    description: str = ""
    connector: str
    target: TargetSpec
    requestors: Principals
    max_duration: Duration
    default_duration: Duration | None = None
    warn_before: Duration = timedelta(minutes=15)
    require_ticket: bool = False
    approvals: tuple[ApprovalLayer, ...] = ()
    extension: Extension = Extension()
    enforce: bool = False

    @model_validator(mode="after")
    def _coherent(self) -> Eligibility:
        if len(self.approvals) > MAX_LAYERS:
            raise ValueError(f"at most {MAX_LAYERS} approval layers, got {len(self.approvals)}")
        if self.requestors.is_empty():
            raise ValueError("requestors needs at least one group or user")
        if self.default_duration is None:
            object.__setattr__(self, "default_duration", self.max_duration)
        elif self.default_duration > self.max_duration:
            raise ValueError("default_duration is longer than max_duration")
        return self

    @property
    def default(self) -> timedelta:
        return self.default_duration or self.max_duration


class Settings(Strict):
    max_duration_ceiling: Duration = timedelta(hours=12)
    membership_cache_ttl: Duration = timedelta(seconds=60)
    justification_max: int = Field(default=500, ge=10, le=2000)
    ticket_pattern: str = r"^[A-Za-z0-9][A-Za-z0-9_\-#/.:]{1,63}$"
    warn_min_approvers: int = Field(default=2, ge=1)


class Policy(Strict):
    audit_channel: str
    security_channel: str | None = None
    admins: Principals = Principals()
    directory: str | None = None
    settings: Settings = Settings()
    connectors: dict[str, dict[str, Any]]
    eligibilities: tuple[Eligibility, ...] = ()

    @model_validator(mode="after")
    def _references(self) -> Policy:
        names = [e.name for e in self.eligibilities]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"eligibility names must be unique: {', '.join(dupes)}")
        for conn_name, conn in self.connectors.items():
            if not isinstance(conn, dict) or "type" not in conn:
                raise ValueError(f"connector {conn_name!r} needs a 'type'")
        for e in self.eligibilities:
            if e.connector not in self.connectors:
                raise ValueError(f"eligibility {e.name!r} uses unknown connector {e.connector!r}")
        if self.directory is not None and self.directory not in self.connectors:
            raise ValueError(f"directory names unknown connector {self.directory!r}")
        return self

    def eligibility(self, name: str) -> Eligibility | None:
        return next((e for e in self.eligibilities if e.name == name), None)

    @property
    def directory_connector(self) -> str:
        return self.directory or next(iter(self.connectors))
