"""The policy model: eligibilities, approval layers, admins. Pure: no file or network access."""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, model_validator

from bot.domain.approval_context import CONTEXT_TYPES, AutoApproveWhen, TicketRequirement
from bot.domain.policy_sections import Bundles, Email, EventSink, Notify, RecoveryAccount, Reports, Settings
from bot.domain.policy_types import Duration, Strict
from bot.domain.step_up import OidcProvider, StepUp, secure_url

MAX_LAYERS = 3


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


_CHANNEL = re.compile(r"#[a-z0-9][a-z0-9_-]{0,79}|[CG][A-Z0-9]{8,20}")
AskWhere = Literal["dm", "channel", "both"]


class LayerApprovers(Principals):
    """A layer's approvers, and where they are asked: by DM (each approver), in one ``channel`` (one
    message there with Approve / Deny; only the layer's approvers' clicks count), or ``both``."""

    channel: str | None = None  # "#name" or a channel id (C…, G…); the bot must be a member
    notify: AskWhere | None = None  # default: "channel" when a channel is named, else "dm"

    @model_validator(mode="after")
    def _channel_ok(self) -> LayerApprovers:
        if self.channel is not None and not _CHANNEL.fullmatch(self.channel):
            raise ValueError(f"channel {self.channel!r} is neither a #channel-name (lower case) nor a channel id")
        if self.notify in ("channel", "both") and self.channel is None:
            raise ValueError(f"notify: {self.notify} needs a channel")
        return self

    @property
    def delivery(self) -> AskWhere:
        """Where the layer's asks go: ``notify``, or its default."""
        return self.notify or ("channel" if self.channel else "dm")

    @property
    def post_channel(self) -> str | None:
        """The channel asks are posted in, or None (DMs only)."""
        return self.channel if self.delivery in ("channel", "both") else None

    @property
    def dm(self) -> bool:
        """Whether each approver is asked by DM."""
        return self.delivery in ("dm", "both")


class ApprovalLayer(Strict):
    approvers: LayerApprovers
    min_approvals: int = Field(default=1, ge=1, le=10)
    timeout: Duration = timedelta(hours=24)
    # Re-DM the layer's undecided approvers this often while it waits.
    remind_every: Duration | None = None
    # After this long without a decision, ``escalation`` joins the layer's approvers (and is told why).
    escalate_after: Duration | None = None
    escalation: Principals | None = None
    # Outside the policy's business hours the layer goes straight to these approvers instead.
    after_hours: Principals | None = None
    step_up: StepUp | None = None  # approvals of this layer need a fresh sign-in (overrides the eligibility's)
    # A requester on call now (PagerDuty) passes this layer at once (bot/services/context/on_call.py).
    auto_approve_when: AutoApproveWhen | None = None

    def approver_set(self, *, after_hours: bool) -> Principals:
        """Who approves this layer: ``after_hours`` approvers when it opened outside business hours."""
        if after_hours and self.after_hours is not None and not self.after_hours.is_empty():
            return self.after_hours
        return self.approvers

    @model_validator(mode="after")
    def _has_approvers(self) -> ApprovalLayer:
        if self.approvers.is_empty():
            raise ValueError("an approval layer needs at least one approver group or user")
        if self.remind_every is not None and self.remind_every < timedelta(minutes=1):
            raise ValueError("remind_every must be at least 1m")
        if (self.escalate_after is None) != (self.escalation is None or self.escalation.is_empty()):
            raise ValueError("escalate_after and escalation (groups and/or users) go together")
        if self.escalate_after is not None and self.escalate_after >= self.timeout:
            raise ValueError("escalate_after must be shorter than the layer's timeout")
        return self


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class BusinessHours(Strict):
    """When the normal approvers are at work: ``days`` from ``start`` to ``end`` in ``timezone``."""

    timezone: str = "UTC"
    days: tuple[str, ...] = DAYS[:5]
    start: time = time(9, 0)
    end: time = time(17, 0)

    @model_validator(mode="after")
    def _valid(self) -> BusinessHours:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {self.timezone!r}") from None
        object.__setattr__(self, "days", tuple(d.strip().lower()[:3] for d in self.days))
        unknown = [d for d in self.days if d not in DAYS]
        if unknown:
            raise ValueError(f"unknown day(s) {unknown}; use {', '.join(DAYS)}")
        if self.start >= self.end:
            raise ValueError("business hours must start before they end")
        return self

    def contains(self, at: datetime) -> bool:
        local = at.astimezone(ZoneInfo(self.timezone))
        return DAYS[local.weekday()] in self.days and self.start <= local.time().replace(tzinfo=None) < self.end


class BreakGlass(Strict):
    """Access granted at once without approval, announced loudly and reviewed after the fact."""

    max_duration: Duration = timedelta(hours=1)

    @model_validator(mode="after")
    def _positive(self) -> BreakGlass:
        if self.max_duration <= timedelta(0):
            raise ValueError("break_glass.max_duration must be longer than zero")
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
    # ``true``: an extension beyond max_duration becomes an extension request that goes through the
    # eligibility's approval layers again (bot/services/extensions.py); ``false``: it is refused.
    reapproval: bool = False


class Transition(Strict):
    """Moving a target off standing access: its standing members are removed on ``static_access_until``.

    The cut-over is at 00:00 UTC of that date. Standing members are DMed ``notify_days`` days before it.
    ``baseline_members`` is how many people held the target standingly before JIT (the risk-reduction
    baseline); when unset, the number of members removed at the cut-over is used.
    """

    static_access_until: date
    notify_days: tuple[int, ...] = (14, 1)
    keep_standing: Principals = Principals()
    baseline_members: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _days(self) -> Transition:
        if any(d < 1 for d in self.notify_days):
            raise ValueError("notify_days must be whole days of at least 1")
        object.__setattr__(self, "notify_days", tuple(sorted(set(self.notify_days), reverse=True)))
        return self

    @property
    def cutover(self) -> datetime:
        return datetime.combine(self.static_access_until, time(0), tzinfo=ZoneInfo("UTC"))


class Eligibility(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")
    description: str = ""
    connector: str
    target: TargetSpec
    requestors: Principals
    max_duration: Duration
    default_duration: Duration | None = None
    warn_before: Duration = timedelta(minutes=15)
    # True: a ticket reference is required; ``{jira: ...}``: it must be a Jira issue in an allowed project
    # and status (bot/services/context/tickets.py).
    require_ticket: bool | TicketRequirement = False
    # Every layer is passed at once by a requester on call now (as if each layer said so).
    auto_approve_when: AutoApproveWhen | None = None
    approvals: tuple[ApprovalLayer, ...] = ()
    extension: Extension = Extension()
    enforce: bool = False
    # On every revoke, also end the user's sign-in sessions at the IdP (connectors that can).
    terminate_sessions: bool = False
    break_glass: BreakGlass | None = None
    # Who may request on behalf of an eligible requestor (admins always may).
    delegates: Principals = Principals()
    transition: Transition | None = None
    step_up: StepUp | None = None  # approvals need a fresh sign-in at an OIDC provider (bot/stepup/)
    # A bundle of other eligibilities, requested and approved once (bot/domain/bundles.py).
    bundle: tuple[str, ...] = ()

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
        if self.extension.reapproval and not self.approvals:
            raise ValueError("extension.reapproval: true needs approval layers: without any, an extension "
                             "beyond max_duration would be approved by nobody")
        if self.break_glass is not None and self.break_glass.max_duration > self.max_duration:
            raise ValueError("break_glass.max_duration is longer than max_duration")
        if self.auto_approve_when is not None and not self.approvals:
            raise ValueError("auto_approve_when needs approval layers (without any, requests are approved anyway)")
        # On-call approval is decided when the request is made: only for the layers that open then.
        human_seen = False
        for i, layer in enumerate(self.approvals, start=1):
            if layer.auto_approve_when is None:
                human_seen = True
            elif human_seen:
                raise ValueError(f"layer {i} has auto_approve_when but an earlier layer does not: on-call "
                                 "approval is decided when the request is made, so it may only lead")
        return self

    def on_call_rule(self, layer: int) -> AutoApproveWhen | None:
        """The on-call rule that passes ``layer`` (1-based): the layer's own, else the eligibility's."""
        own = self.approvals[layer - 1].auto_approve_when if 1 <= layer <= len(self.approvals) else None
        return own or self.auto_approve_when

    @property
    def ticket_rule(self) -> TicketRequirement | None:
        return self.require_ticket if isinstance(self.require_ticket, TicketRequirement) else None

    def reviewers(self) -> Principals:
        """Everyone who approves any layer: they review break-glass uses after the fact."""
        groups = tuple(dict.fromkeys(g for layer in self.approvals for g in layer.approvers.groups))
        users = tuple(dict.fromkeys(u for layer in self.approvals for u in layer.approvers.users))
        return Principals(groups=groups, users=users)

    @property
    def default(self) -> timedelta:
        return self.default_duration or self.max_duration


class Policy(Strict):
    audit_channel: str
    security_channel: str | None = None
    business_hours: BusinessHours | None = None
    admins: Principals = Principals()
    directory: str | None = None
    settings: Settings = Settings()
    connectors: dict[str, dict[str, Any]] = Field(repr=False)  # holds interpolated credentials
    # ``connectors:`` entries of a context type (pagerduty, jira): declared with the others in the file,
    # kept apart here so that everything that builds identity-provider connectors never sees them.
    context_connectors: dict[str, dict[str, Any]] = Field(default_factory=dict, repr=False)
    eligibilities: tuple[Eligibility, ...] = ()
    reports: Reports = Reports()
    email: Email | None = None
    notify: Notify = Notify()
    recovery_accounts: tuple[RecoveryAccount, ...] = ()
    event_sinks: tuple[EventSink, ...] = ()
    oidc_providers: dict[str, OidcProvider] = Field(default_factory=dict, repr=False)
    public_url: str | None = None  # where browsers reach ``jitbot serve`` (step-up links and callback)
    bundles: Bundles = Bundles()  # ad-hoc bundles: several eligibilities picked in one /jit request

    @model_validator(mode="before")
    @classmethod
    def _split_context_connectors(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("connectors"), dict):
            return data
        conns: dict[str, Any] = data["connectors"]
        context = {n: c for n, c in conns.items() if isinstance(c, dict) and c.get("type") in CONTEXT_TYPES}
        if not context:
            return data
        return {**data, "connectors": {n: c for n, c in conns.items() if n not in context},
                "context_connectors": {**(data.get("context_connectors") or {}), **context}}

    @model_validator(mode="before")
    @classmethod
    def _prepare_bundles(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("eligibilities"), list):
            return data
        from bot.domain.bundles import prepare

        return {**data, "eligibilities": prepare(data["eligibilities"])}

    @model_validator(mode="after")
    def _compose_bundles(self) -> Policy:
        if any(e.bundle for e in self.eligibilities):
            from bot.domain.bundles import compose

            by_name = {e.name: e for e in self.eligibilities}
            object.__setattr__(self, "eligibilities", tuple(
                compose(e, [by_name[m] for m in e.bundle]) if e.bundle else e for e in self.eligibilities))
        return self

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
            if e.connector in self.context_connectors:
                raise ValueError(f"eligibility {e.name!r} uses unknown connector {e.connector!r}: it is a "
                                 f"{self.context_connectors[e.connector].get('type')} connector, which grants nothing")
            if e.connector not in self.connectors:
                raise ValueError(f"eligibility {e.name!r} uses unknown connector {e.connector!r}")
        if self.directory is not None and self.directory not in self.connectors:
            raise ValueError(f"directory names unknown connector {self.directory!r}")
        for e in self.eligibilities:
            self._check_context_references(e)
        if self.notify.email and self.email is None:
            raise ValueError("notify.email needs the email (SMTP) settings")
        for e in self.eligibilities:
            for where, step_up in [("", e.step_up), *((f" layer {i}", layer.step_up)
                                                       for i, layer in enumerate(e.approvals, start=1))]:
                if step_up is None:
                    continue
                if step_up.provider not in self.oidc_providers:
                    raise ValueError(f"eligibility {e.name!r}{where}: step_up uses unknown oidc provider "
                                     f"{step_up.provider!r}")
                if self.public_url is None or not secure_url(self.public_url):
                    raise ValueError("step_up needs public_url: the https URL where browsers reach jitbot serve")
        sinks = [s.name for s in self.event_sinks]
        if len(set(sinks)) != len(sinks):
            raise ValueError("event sink names must be unique")
        for account in self.recovery_accounts:
            if account.connector not in self.connectors:
                raise ValueError(f"recovery account {account.email!r} uses unknown connector {account.connector!r}")
        return self

    def _check_context_references(self, e: Eligibility) -> None:
        rules = [r.on_call.pagerduty for r in (e.auto_approve_when, *(la.auto_approve_when for la in e.approvals))
                 if r is not None]
        wanted = [("pagerduty", r.connector) for r in rules]
        if e.ticket_rule is not None:
            wanted.append(("jira", e.ticket_rule.jira.connector))
        for kind, name in wanted:
            conf = self.context_connectors.get(name)
            if conf is None or conf.get("type") != kind:
                raise ValueError(f"eligibility {e.name!r} uses unknown connector {name!r} "
                                 f"(it needs a connector of type {kind})")

    def eligibility(self, name: str) -> Eligibility | None:
        """The eligibility called ``name``; for an ad-hoc bundle's name (``a+b``), the bundle of those
        eligibilities composed from this policy (bot/domain/bundles.py), None when they cannot form one."""
        found = next((e for e in self.eligibilities if e.name == name), None)
        if found is not None or "+" not in name:
            return found
        from bot.domain.bundles import adhoc, adhoc_members

        return adhoc(adhoc_members(name) or [], {e.name: e for e in self.eligibilities}, self.bundles.max_items)

    def after_hours(self, at: datetime) -> bool:
        """Whether ``at`` is outside the business hours (never, when the policy sets none)."""
        return self.business_hours is not None and not self.business_hours.contains(at)

    @property
    def directory_connector(self) -> str:
        return self.directory or next(iter(self.connectors))
