"""Request states, transitions and the rules that guard them. Pure: plain values in, values out.

Every refusal is a ``PolicyViolation`` whose message can be shown to the person who asked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from bot.domain.policy import Eligibility


class PolicyViolation(Exception):
    """A rule refused the action; ``str()`` is safe to show to the user. ``field`` names a modal input."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Status(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"
    DENIED = "denied"
    CANCELLED = "cancelled"
    LAPSED = "lapsed"
    FAILED = "failed"


BREAKGLASS = "breakglass"  # AccessRequest.kind of a break-glass request (the others: "access", "extension")
EXTENSION = "extension"  # AccessRequest.kind of a request for more time on an active grant (``parent_id``)
TERMINAL = frozenset({Status.EXPIRED, Status.REVOKED, Status.DENIED, Status.CANCELLED, Status.LAPSED})

TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.PENDING, Status.APPROVED, Status.DENIED, Status.CANCELLED, Status.LAPSED}),
    Status.APPROVED: frozenset({Status.ACTIVE, Status.FAILED, Status.REVOKED, Status.CANCELLED}),
    Status.FAILED: frozenset({Status.APPROVED, Status.REVOKED}),
    Status.ACTIVE: frozenset({Status.EXPIRED, Status.REVOKED}),
}


def check_transition(current: Status, new: Status) -> None:
    """Raise unless ``current → new`` is an edge of the state machine."""
    if new not in TRANSITIONS.get(current, frozenset()):
        raise PolicyViolation(f"a {current.value} request cannot become {new.value}")


class Decision(StrEnum):
    APPROVE = "approve"
    DENY = "deny"


@dataclass(frozen=True, slots=True)
class Vote:
    layer: int
    approver: str  # email, lower case
    decision: Decision


@dataclass(frozen=True, slots=True)
class Submission:
    eligibility: str
    requester: str  # email, lower case
    duration: timedelta
    justification: str
    ticket: str | None = None


def validate_submission(
    sub: Submission,
    elig: Eligibility,
    *,
    requester_eligible: bool,
    justification_max: int,
    ticket_pattern: str,
) -> Submission:
    """Check a new request against its eligibility; return it normalised or raise PolicyViolation."""
    if not requester_eligible:
        raise PolicyViolation(f"You are not eligible to request {elig.name}.", field="eligibility")
    if sub.duration <= timedelta(0):
        raise PolicyViolation("Duration must be longer than zero.", field="duration")
    if sub.duration > elig.max_duration:
        raise PolicyViolation(f"{elig.name} allows at most {_fmt(elig.max_duration)}.", field="duration")
    justification = sub.justification.strip()
    if len(justification) < 3:
        raise PolicyViolation("Please say why you need this access.", field="justification")
    if len(justification) > justification_max:
        raise PolicyViolation(f"Justification is too long ({len(justification)} characters; at most "
                              f"{justification_max}).", field="justification")
    ticket = (sub.ticket or "").strip() or None
    if elig.require_ticket and ticket is None:
        raise PolicyViolation(f"{elig.name} requires a ticket reference.", field="ticket")
    if ticket is not None and not re.fullmatch(ticket_pattern, ticket):
        raise PolicyViolation("That does not look like a ticket reference (e.g. OPS-1234).", field="ticket")
    return Submission(sub.eligibility, sub.requester.strip().lower(), sub.duration, justification, ticket)


@dataclass(frozen=True, slots=True)
class LayerOutcome:
    """What a vote did: the request's new status and layer."""

    status: Status
    layer: int
    layer_passed: bool


def decide(
    *,
    status: Status,
    current_layer: int,
    layers: int,
    min_approvals: int,
    requester: str,
    votes: Sequence[Vote],
    vote: Vote,
    approver_in_layer: bool,
    submitter: str | None = None,
) -> LayerOutcome:
    """Apply one approver's vote to a PENDING request and return the outcome.

    Refuses: a non-pending request, a vote for a layer that is not the current one, an approver who
    is not in the layer's approver set *now*, the requester, whoever submitted the request on the
    requester's behalf, someone who already voted on an earlier layer of this request (separation of
    duties), and a second vote by the same person.
    """
    who = vote.approver.lower()
    if status is not Status.PENDING:
        raise PolicyViolation(f"This request is already {status.value}.")
    if vote.layer != current_layer:
        raise PolicyViolation(f"Layer {vote.layer} is no longer open; the request is at layer {current_layer}."
                              if vote.layer < current_layer else f"Layer {vote.layer} is not open yet.")
    if who == requester.lower():
        raise PolicyViolation("You cannot approve or deny your own request.")
    if submitter is not None and who == submitter.lower():
        raise PolicyViolation("You submitted this request on someone's behalf; another approver must decide it.")
    if not approver_in_layer:
        raise PolicyViolation(f"You are not an approver for layer {current_layer} of this request.")
    for earlier in votes:
        if earlier.approver.lower() == who:
            if earlier.layer == current_layer:
                raise PolicyViolation("You have already decided on this layer.")
            raise PolicyViolation("You already approved an earlier layer of this request; "
                                  "another approver must decide this one.")
    if vote.decision is Decision.DENY:
        return LayerOutcome(Status.DENIED, current_layer, layer_passed=False)
    approvals = {v.approver.lower() for v in votes if v.layer == current_layer and v.decision is Decision.APPROVE}
    approvals.add(who)
    if len(approvals) < min_approvals:
        return LayerOutcome(Status.PENDING, current_layer, layer_passed=False)
    if current_layer >= layers:
        return LayerOutcome(Status.APPROVED, current_layer, layer_passed=True)
    return LayerOutcome(Status.PENDING, current_layer + 1, layer_passed=True)


def eligible_approvers(layer_members: Iterable[str], *, requester: str, earlier_approvers: Iterable[str],
                       submitter: str | None = None) -> set[str]:
    """Who may still decide a layer: its members minus the requester, the submitter (on behalf of)
    and earlier layers' approvers."""
    excluded = {requester.lower(), *(a.lower() for a in earlier_approvers)}
    if submitter:
        excluded.add(submitter.lower())
    return {m.lower() for m in layer_members} - excluded


@dataclass(frozen=True, slots=True)
class ExtensionPlan:
    new_expires_at: datetime


def plan_extension(
    *, elig: Eligibility, status: Status, granted_at: datetime, expires_at: datetime, now: datetime, by: timedelta
) -> ExtensionPlan:
    """Where an extension of an active grant by ``by`` leads, or PolicyViolation."""
    if status is not Status.ACTIVE:
        raise PolicyViolation(f"Only active access can be extended; this request is {status.value}.")
    if not elig.extension.allowed:
        raise PolicyViolation(f"{elig.name} does not allow extensions.")
    if by <= timedelta(0):
        raise PolicyViolation("An extension must be longer than zero.")
    if expires_at <= now:
        raise PolicyViolation("This access has already expired.")
    new_expiry = expires_at + by
    if new_expiry - granted_at <= elig.max_duration:
        return ExtensionPlan(new_expiry)
    room = elig.max_duration - (expires_at - granted_at)
    raise PolicyViolation(f"{elig.name} allows at most {_fmt(elig.max_duration)} in total; "
                          f"you can extend by {_fmt(room) if room > timedelta(0) else 'nothing more'}.")


def _fmt(value: timedelta) -> str:
    from bot.domain.durations import format_duration

    return format_duration(value)
