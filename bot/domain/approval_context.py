"""Policy keys that take approval context from the tools incidents live in: PagerDuty (on-call approval)
and Jira (ticket checks). Pure: validated values, no network.

``auto_approve_when: {on_call: {pagerduty: {connector, schedules, escalation_policies, escalation_levels,
end_with_shift}}}`` on an approval layer (or on the eligibility: every layer) lets a requester who is on
call now pass the layer at once. ``require_ticket: {jira: {connector, projects, statuses, end_with_ticket}}``
makes the ticket a Jira issue that must exist in an allowed project and status.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

# ``connectors:`` entries of these types are context sources, not identity providers (Policy keeps them
# apart in ``context_connectors``).
CONTEXT_TYPES = frozenset({"pagerduty", "jira"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PagerDutyOnCall(_Strict):
    """On call now for one of ``schedules`` or ``escalation_policies`` (at one of ``escalation_levels``,
    when given). ``end_with_shift`` caps the grant at the end of the matching shift."""

    connector: str
    schedules: tuple[str, ...] = ()
    escalation_policies: tuple[str, ...] = ()
    escalation_levels: tuple[int, ...] = ()
    end_with_shift: bool = False

    @model_validator(mode="after")
    def _something_to_match(self) -> PagerDutyOnCall:
        if not self.schedules and not self.escalation_policies:
            raise ValueError("on_call.pagerduty needs at least one schedule or escalation policy id")
        if any(level < 1 for level in self.escalation_levels):
            raise ValueError("escalation_levels start at 1")
        return self


class OnCall(_Strict):
    pagerduty: PagerDutyOnCall


class AutoApproveWhen(_Strict):
    on_call: OnCall


class JiraTicket(_Strict):
    """The ticket is a Jira issue of one of ``projects`` (keys) whose status is one of ``statuses``
    (names, compared case-insensitively). ``end_with_ticket`` revokes when the issue leaves them."""

    connector: str
    projects: tuple[str, ...] = Field(min_length=1)
    statuses: tuple[str, ...] = Field(min_length=1)
    end_with_ticket: bool = False

    @model_validator(mode="after")
    def _normalise(self) -> JiraTicket:
        object.__setattr__(self, "projects", tuple(p.strip().upper() for p in self.projects))
        return self

    def allows_status(self, status: str) -> bool:
        return status.strip().casefold() in {s.strip().casefold() for s in self.statuses}


class TicketRequirement(_Strict):
    jira: JiraTicket
