"""Ticket checks against Jira (``require_ticket: {jira: ...}``), and the watch that ends access with its ticket.

A request's ticket must be a Jira issue in one of the rule's projects, in one of its statuses, when the
request is made (``check_ticket``: refused with a message for the modal's ticket field, nothing is
requested) and again when the grant is carried out (``ticket_refusal``; Jira unreachable then is a
transient failure: the grant is retried, never carried out unchecked).

``end_with_ticket``: access ends with its ticket (bot/services/background/ticket_watch.py).
"""

from __future__ import annotations

import logging
from typing import Any

from bot.domain.approval_context import JiraTicket
from bot.domain.policy import Eligibility
from bot.domain.requests import PolicyViolation
from bot.services.runtime import Runtime
from connectors.base import ConnectorError
from connectors.jira import Issue

log = logging.getLogger(__name__)

# The requests whose ticket is checked: "access" ones (a break-glass use asks for no ticket, and an
# extension's ticket is its original request's).
TICKETED_KIND = "access"



def ticket_problem(rule: JiraTicket, issue: Issue) -> str | None:
    """Why ``issue`` does not satisfy ``rule`` (a sentence for the requester), or None."""
    if issue.project.upper() not in rule.projects:
        return (f"{issue.key} is in project {issue.project}; this access needs a ticket in "
                f"{', '.join(rule.projects)}.")
    if not rule.allows_status(issue.status):
        return f"{issue.key} is {issue.status!r}; this access needs a ticket that is {' or '.join(rule.statuses)}."
    return None


async def check_ticket(rt: Runtime, elig: Eligibility, ticket: str | None) -> dict[str, Any] | None:
    """For an eligibility whose ticket must be a Jira issue: the issue as the request keeps it (key,
    summary, status, project, link). Raises PolicyViolation on the ticket field otherwise."""
    rule = elig.ticket_rule
    if rule is None or ticket is None:
        return None
    try:
        issue = await rt.context.jira(rt.policy.context_connectors, rule.jira.connector).issue(ticket)
    except ConnectorError as exc:
        log.warning("ticket check of %s for %s failed: %s", ticket, elig.name, exc)
        raise PolicyViolation("Jira could not be reached to check the ticket, so nothing was requested. "
                              "Please try again in a minute.", field="ticket") from None
    if issue is None:
        raise PolicyViolation(f"Jira has no ticket {ticket} (or jitbot may not see it).", field="ticket")
    problem = ticket_problem(rule.jira, issue)
    if problem is not None:
        raise PolicyViolation(problem, field="ticket")
    return issue.as_context()


async def ticket_refusal(rt: Runtime, eligibility: str, ticket: str | None) -> str | None:
    """At the moment of granting: why the ticket no longer allows it, or None. Raises ConnectorError when
    Jira cannot be asked (the grant is retried later)."""
    elig = rt.eligibility(eligibility)
    rule = elig.ticket_rule if elig is not None else None
    if rule is None:
        return None
    if ticket is None:
        return f"{eligibility} now needs a Jira ticket"
    issue = await rt.context.jira(rt.policy.context_connectors, rule.jira.connector).issue(ticket)
    if issue is None:
        return f"Jira no longer has the ticket {ticket}"
    problem = ticket_problem(rule.jira, issue)
    return f"the ticket no longer qualifies: {problem}" if problem else None
