"""The policy's sections beside its eligibilities: ``settings``, ``email``, ``notify``,
``recovery_accounts``, ``event_sinks``, ``reports`` and ``bundles`` (docs/policy.md). Pure."""

from __future__ import annotations

import base64
import binascii
from datetime import timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ConfigDict, Field, SecretStr, model_validator

from bot.domain.policy_types import Duration, Strict


class Reports(Strict):
    """The scheduled access-review post to the audit channel (a 5-field cron in ``timezone``)."""

    cron: str = "0 9 * * MON"
    timezone: str = "UTC"
    period: Duration = timedelta(days=7)
    enabled: bool = True
    # Attach the weekly PNG chart (Slack's external-upload API). Needs the `files:write` bot scope,
    # which the shipped manifest leaves out for least privilege: add it to the app before enabling.
    attach_chart: bool = False

    @model_validator(mode="after")
    def _valid(self) -> Reports:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {self.timezone!r}") from None
        if len(self.cron.split()) != 5:
            raise ValueError("cron needs 5 fields: minute hour day month day_of_week")
        from apscheduler.triggers.cron import CronTrigger  # pure date arithmetic, no scheduler

        try:
            CronTrigger.from_crontab(self.cron, timezone=self.timezone)
        except ValueError as exc:
            raise ValueError(f"invalid cron {self.cron!r}: {exc}") from None
        return self


# How long an approved grant may wait on the identity provider at most (``Settings.grant_retry_for``).
GRANT_RETRY_FOR_MAX = timedelta(days=7)


class Settings(Strict):
    max_duration_ceiling: Duration = timedelta(hours=12)
    membership_cache_ttl: Duration = timedelta(seconds=60)
    justification_max: int = Field(default=500, ge=10, le=2000)
    ticket_pattern: str = r"^[A-Za-z0-9][A-Za-z0-9_\-#/.:]{1,63}$"
    warn_min_approvers: int = Field(default=2, ge=1)
    # ``policy check --live`` warns about an approver group larger than this (each member is DMed).
    warn_max_approvers: int = Field(default=100, ge=1)
    # Unreviewed break-glass uses are reminded to their reviewers this often.
    break_glass_review_every: Duration = timedelta(days=1)
    # How far ahead a request may be scheduled to start.
    max_schedule_ahead: Duration = timedelta(days=30)
    # Slack guests (is_restricted / is_ultra_restricted) and users of another workspace or organisation
    # are refused (they cannot request, approve, review or use /jit) unless admitted here.
    allow_slack_guests: bool = False
    allow_slack_external_users: bool = False
    # How often the worker posts the audit chain's length and head hash to the audit channel (when it grew).
    audit_anchor_every: Duration = timedelta(hours=1)

    @model_validator(mode="after")
    def _anchor_interval(self) -> Settings:
        if self.audit_anchor_every < timedelta(minutes=1):
            raise ValueError("audit_anchor_every must be at least 1m")
        return self

    # A grant the IdP cannot carry out for a transient reason (5xx, timeout, throttling) is tried again
    # until this long after it became due; unset: the request's own duration.
    grant_retry_for: Duration | None = None

    # In an identity-provider outage an admin group's last known membership decides admin authorisation,
    # when it is at most this old.
    admin_outage_max_age: Duration = timedelta(hours=4)

    @model_validator(mode="after")
    def _retry_positive(self) -> Settings:
        if self.grant_retry_for is not None and self.grant_retry_for < timedelta(minutes=1):
            raise ValueError("settings.grant_retry_for must be at least 1m")
        if self.grant_retry_for is not None and self.grant_retry_for > GRANT_RETRY_FOR_MAX:
            raise ValueError(f"settings.grant_retry_for must be at most {GRANT_RETRY_FOR_MAX.days}d")
        if self.admin_outage_max_age > timedelta(days=7):
            raise ValueError("settings.admin_outage_max_age must be at most 7d")
        return self

    # Requests one person may submit in an hour (a runaway script, a loop of auto-approved requests).
    max_requests_per_hour: int = Field(default=30, ge=1)


class Email(Strict):
    """SMTP for email notifications (aiosmtplib). ``password`` is a secret: never dumped or logged."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    host: str
    port: int = Field(default=587, ge=1, le=65535)
    starttls: bool = True  # upgrade a plain connection (port 587); refuse to send if the server cannot
    tls: bool = False  # implicit TLS from the first byte (port 465)
    username: str | None = None
    password: SecretStr | None = None
    from_: str = Field(alias="from")
    ca_file: str | None = None  # a CA bundle for an internal SMTP server's certificate
    timeout: Duration = timedelta(seconds=10)

    @model_validator(mode="after")
    def _coherent(self) -> Email:
        if "@" not in self.from_:
            raise ValueError("email.from must be an email address")
        if (self.username is None) != (self.password is None):
            raise ValueError("email.username and email.password go together")
        if self.tls and self.starttls:
            raise ValueError("email: set tls (implicit, port 465) or starttls (port 587), not both")
        return self


class Notify(Strict):
    """Who gets their direct messages by email, and whether undeliverable DMs fall back to email."""

    email: tuple[str, ...] = ()  # these people get DMs by email instead of Slack
    email_fallback: bool = True  # a DM Slack refuses for good (user not found, deactivated) is emailed

    @model_validator(mode="after")
    def _normalise(self) -> Notify:
        object.__setattr__(self, "email", tuple(u.strip().lower() for u in self.email))
        return self


class RecoveryAccount(Strict):
    """A static break-glass admin account at an IdP: each of its sign-ins is posted for review."""

    email: str
    connector: str


class EventSink(Strict):
    """Where every audit event is also sent (bot/events/): a Standard Webhooks endpoint or a syslog
    server (RFC 5424 over TLS, RFC 5425). ``secret`` is a signing secret: never dumped or logged."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")
    type: Literal["webhook", "syslog"]
    url: str | None = None  # webhook
    secret: SecretStr | None = Field(default=None, repr=False)  # webhook: "whsec_" + base64 of 24-64 bytes
    host: str | None = None  # syslog
    port: int = Field(default=6514, ge=1, le=65535)
    tls: bool = True  # syslog: RFC 5425 (TLS); false only for a relay on the same host
    ca_file: str | None = None  # a CA bundle for an internal receiver's certificate
    timeout: Duration = timedelta(seconds=10)
    source: str = "urn:jitbot"  # the CloudEvents ``source`` of every event sent

    @model_validator(mode="after")
    def _coherent(self) -> EventSink:
        if self.type == "webhook":
            if not self.url or not self.url.startswith(("https://", "http://")):
                raise ValueError(f"event sink {self.name!r}: a webhook needs an http(s) url")
            if self.secret is None:
                raise ValueError(f"event sink {self.name!r}: a webhook needs a signing secret")
            raw = self.secret.get_secret_value().removeprefix("whsec_")
            try:
                key = base64.b64decode(raw + "==", validate=False)
            except (binascii.Error, ValueError):
                key = b""
            if not 24 <= len(key) <= 64:
                raise ValueError(f"event sink {self.name!r}: the secret must be whsec_ followed by the base64 "
                                 "of 24 to 64 random bytes")
        elif not self.host:
            raise ValueError(f"event sink {self.name!r}: a syslog sink needs a host")
        return self


class Bundles(Strict):
    # How many eligibilities one /jit request may pick together (an ad-hoc bundle); 1 turns it off.
    max_items: int = Field(default=5, ge=1, le=10)


