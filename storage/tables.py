"""SQLModel tables. Every future action is a due-time column with an index (the database is the schedule)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, String, Text, text
from sqlalchemy.orm import configure_mappers
from sqlmodel import Field, SQLModel

from storage.types import UTCDateTime

# The rows uq_request_one_pending covers: pending requests for access (not extensions, not break-glass).
ONE_PENDING = text("status = 'pending' AND kind = 'access'")
IN_A_BUNDLE = text("bundle_id IS NOT NULL")


def _ts(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


class EligibilityRow(SQLModel, table=True):
    """An eligibility as applied from the policy file."""

    __tablename__ = "eligibility"
    name: str = Field(primary_key=True, max_length=64)
    definition: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    policy_sha256: str = Field(max_length=64)
    applied_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    active: bool = True


class AccessRequest(SQLModel, table=True):
    """A request for an eligibility, and its approval progress."""

    __tablename__ = "access_request"
    id: str = Field(primary_key=True, max_length=32)
    eligibility: str = Field(index=True, max_length=64)
    kind: str = Field(default="access", max_length=16)  # access | extension | breakglass
    parent_id: str | None = Field(default=None, max_length=32)  # extension → the original request
    requester: str = Field(index=True, max_length=320)  # email, lower case
    requester_slack: str | None = Field(default=None, max_length=32)
    # Who submitted it, when a delegate or an admin asked on the requester's (beneficiary's) behalf.
    submitted_by: str | None = Field(default=None, max_length=320)
    submitted_by_slack: str | None = Field(default=None, max_length=32)
    duration_s: int
    justification: str = Field(sa_column=Column(Text, nullable=False))
    ticket: str | None = Field(default=None, max_length=64)
    status: str = Field(index=True, max_length=16)
    layer: int = 1
    layers: int = 0
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    decided_at: datetime | None = _ts()
    # Due: PENDING requests lapse at layer_deadline.
    layer_deadline: datetime | None = _ts()
    # Due: undecided approvers of the current layer are reminded at next_reminder_at.
    next_reminder_at: datetime | None = _ts()
    # Due: the layer's escalation approvers join it at escalate_at; ``escalated`` says they did.
    escalate_at: datetime | None = _ts()
    escalated: bool = False
    # The current layer opened outside business hours: its ``after_hours`` approvers decide it.
    after_hours: bool = False
    # Scheduled start: approved ahead, granted at starts_at (the duration counts from then).
    starts_at: datetime | None = _ts()
    # Break-glass after-the-fact review; due: reviewers are reminded at review_remind_at until reviewed.
    review_remind_at: datetime | None = _ts()
    reviewed_by: str | None = Field(default=None, max_length=320)
    reviewed_at: datetime | None = _ts()
    review_outcome: str | None = Field(default=None, max_length=16)  # acknowledged | flagged
    reason: str | None = Field(default=None, sa_column=Column(Text))
    version: int = 0
    # Approval context (migration 0009): the Jira ticket as checked, the on-call shift that approved it.
    context: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # Access ends by this time whatever the duration (``end_with_shift``: the on-call shift's end).
    ends_by: datetime | None = _ts()
    # Bundles (0013): the bundle's request id, on it and on each member's request made at its approval.
    bundle_id: str | None = Field(default=None, max_length=32)

    __table_args__ = (
        Index("ix_request_pending_due", "status", "layer_deadline"),
        Index("ix_request_reminder_due", "status", "next_reminder_at"),
        Index("ix_request_escalation_due", "status", "escalate_at"),
        Index("ix_request_review_due", "kind", "review_remind_at"),
        Index("ix_request_open", "requester", "eligibility", "status"),  # a person's pending request (0008)
        # a bundle's members (0013); partial, so that the worker's all-or-nothing check reads bundle members
        # only, however many other requests are open
        Index("ix_request_bundle", "bundle_id", "status", sqlite_where=IN_A_BUNDLE, postgresql_where=IN_A_BUNDLE),
        # One pending access request per person (the beneficiary) and eligibility, kept by the database:
        # two replicas' submissions at the same moment both pass the service's read (0009).
        Index("uq_request_one_pending", "requester", "eligibility", unique=True,
              sqlite_where=ONE_PENDING, postgresql_where=ONE_PENDING),
    )


class ApprovalVote(SQLModel, table=True):
    __tablename__ = "approval_vote"
    id: int | None = Field(default=None, primary_key=True)
    request_id: str = Field(index=True, foreign_key="access_request.id", max_length=32)
    layer: int
    approver: str = Field(max_length=320)
    approver_slack: str | None = Field(default=None, max_length=32)
    decision: str = Field(max_length=8)
    reason: str | None = Field(default=None, sa_column=Column(Text))
    at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))

    __table_args__ = (Index("uq_vote_once", "request_id", "approver", unique=True),)


class Grant(SQLModel, table=True):
    """Access given at the identity provider. ``status``: granting → active → revoking → ended | failed."""

    __tablename__ = "grant"
    id: str = Field(primary_key=True, max_length=32)
    request_id: str = Field(index=True, foreign_key="access_request.id", max_length=32)
    connector: str = Field(max_length=64)
    target_kind: str = Field(max_length=8)
    target_id: str = Field(max_length=256)
    user_email: str = Field(max_length=320, index=True)
    user_idp_id: str | None = Field(default=None, max_length=256)
    status: str = Field(max_length=16)
    # Whether this grant (still) owns the membership: False for standing access held before the grant.
    owns_membership: bool = False
    # Whether the user was a member before this grant's first IdP call (recorded before the call, so that
    # a retry after a crash still knows the membership is ours).
    pre_member: bool | None = None
    granted_at: datetime | None = _ts()
    expires_at: datetime | None = _ts()
    warn_at: datetime | None = _ts()
    next_attempt_at: datetime | None = _ts()
    claimed_until: datetime | None = _ts()
    claimed_by: str | None = Field(default=None, max_length=64)  # the worker instance holding the claim
    # Grows by one with every claim: a worker acts on, and records, a grant only while the row still holds
    # the token its claim returned (a fence: bot/services/access/fencing.py).
    claim_token: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    attempts: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    alerted: bool = False
    ended_at: datetime | None = _ts()
    end_reason: str | None = Field(default=None, max_length=16)  # expired | revoked | released

    __table_args__ = (
        Index("ix_grant_due_action", "status", "next_attempt_at"),
        Index("ix_grant_due_expiry", "status", "expires_at"),
        Index("ix_grant_due_warn", "status", "warn_at"),
        Index("ix_grant_holder", "connector", "target_kind", "target_id", "user_email", "status"),
    )


class Event(SQLModel, table=True):
    """Append-only audit log; ``hash`` chains each row to the previous one."""

    __tablename__ = "event"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    request_id: str | None = Field(default=None, index=True, max_length=32)
    actor: str = Field(max_length=320)
    kind: str = Field(max_length=32)
    from_state: str | None = Field(default=None, max_length=16)
    to_state: str | None = Field(default=None, max_length=16)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64, unique=True)


class OutboxMessage(SQLModel, table=True):
    """A notification written with the state change that caused it, delivered by the dispatcher."""

    __tablename__ = "outbox"
    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    # delivery is in order per key (the request id, or a lane); keys sort byte by byte, whatever the
    # database's locale (a layer's asks are a range of keys: bot/services/outbox/sql.py)
    order_key: str = Field(sa_column=Column(String(64).with_variant(String(64, collation="C"), "postgresql"),
                                            nullable=False))
    kind: str = Field(max_length=32)
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    status: str = Field(default="pending", max_length=8)  # pending | sent | dead
    attempts: int = 0
    next_attempt_at: datetime | None = _ts()
    claimed_until: datetime | None = _ts()
    claimed_by: str | None = Field(default=None, max_length=64)
    claim_token: int = Field(default=0, sa_column_kwargs={"server_default": "0"})  # grows with every claim
    sent_at: datetime | None = _ts()
    last_error: str | None = Field(default=None, sa_column=Column(Text))

    # a key's pending messages by a seek, however many it has sent (a lane keeps every line it posted)
    __table_args__ = (Index("ix_outbox_due", "status", "next_attempt_at"),
                      Index("ix_outbox_key_status", "order_key", "status", "id"))


class MessageRef(SQLModel, table=True):
    """Where a delivered Slack message lives, so that every copy can be updated later."""

    __tablename__ = "message_ref"
    id: int | None = Field(default=None, primary_key=True)
    request_id: str = Field(index=True, max_length=32)
    purpose: str = Field(max_length=32)  # approval:<layer> | audit_root | requester
    recipient: str = Field(default="", max_length=320)
    channel: str = Field(max_length=32)
    ts: str = Field(max_length=32)


class Membership(SQLModel, table=True):
    """Memberships of the memory connector, persisted so that they survive restarts."""

    __tablename__ = "memory_membership"
    connector: str = Field(primary_key=True, max_length=64)
    target: str = Field(primary_key=True, max_length=300)
    user_id: str = Field(primary_key=True, max_length=320)


class WorkerHeartbeat(SQLModel, table=True):
    __tablename__ = "worker_heartbeat"
    worker_id: str = Field(primary_key=True, max_length=64)
    beat_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    ticks: int = 0
    policy_version: int | None = None  # the applied policy version the replica runs (0: none followed)


class StepUpLink(SQLModel, table=True):
    """A one-time step-up link given to an approver who clicked Approve (bot/stepup/). ``id`` is the
    SHA-256 of the link's secret, ``state_hash`` of the OIDC ``state`` once the sign-in started; the
    secret itself is never stored. Status: issued -> started -> verifying -> used | failed."""

    __tablename__ = "step_up_link"
    id: str = Field(primary_key=True, max_length=64)
    state_hash: str | None = Field(default=None, max_length=64, unique=True)
    request_id: str = Field(max_length=32)
    layer: int
    approver: str = Field(max_length=320)
    approver_slack: str | None = Field(default=None, max_length=32)
    provider: str = Field(max_length=64)
    status: str = Field(max_length=16)
    nonce: str | None = Field(default=None, max_length=64)
    verifier: str | None = Field(default=None, max_length=128)  # PKCE code_verifier, until used
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    expires_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    finished_at: datetime | None = _ts()
    error: str | None = Field(default=None, max_length=200)


class KeyValue(SQLModel, table=True):
    """Small persisted state: the applied policy hash, cursors, counters."""

    __tablename__ = "kv"
    key: str = Field(primary_key=True, max_length=128)
    value: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))


class TransitionRemoval(SQLModel, table=True):
    """A standing member removed at an eligibility's cut-over: the record that lets it be reverted."""

    __tablename__ = "transition_removal"
    id: int | None = Field(default=None, primary_key=True)
    eligibility: str = Field(index=True, max_length=64)
    connector: str = Field(max_length=64)
    target_kind: str = Field(max_length=8)
    target_id: str = Field(max_length=256)
    user_email: str = Field(max_length=320)
    user_idp_id: str = Field(max_length=256)
    removed_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    restored_at: datetime | None = _ts()
    restored_by: str | None = Field(default=None, max_length=320)


class TransitionNotice(SQLModel, table=True):
    """One DM telling a standing member to use /jit: at most one per member, eligibility and notify day."""

    __tablename__ = "transition_notice"
    id: int | None = Field(default=None, primary_key=True)
    eligibility: str = Field(max_length=64)
    user_email: str = Field(max_length=320)
    days_before: int
    sent_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))

    __table_args__ = (Index("uq_transition_notice_once", "eligibility", "user_email", "days_before", unique=True),)


# Set up every model's attribute instrumentation now. The ORM does it lazily, at the first query or
# session use; ``storage.records`` builds row objects without either (``build``, ``rows``), and reading
# a field of such an object before any ORM query in the process failed ("'NoneType' object has no
# attribute 'supports_population'") — a break-glass as the first thing a fresh process did.
configure_mappers()
