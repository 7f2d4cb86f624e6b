"""``end_with_ticket``: access ends when its Jira ticket leaves the allowed statuses (or projects).

Every ``poll_every`` (the jira connector's setting, one minute by default), once across replicas
(``kv['tickets:schedule']``), the watch asks Jira about the tickets of active grants whose eligibility
says ``end_with_ticket`` (each ticket once) and revokes each grant whose ticket no longer qualifies or
that Jira no longer knows. A ticket Jira cannot be asked about this turn is asked again next turn;
meanwhile the grant keeps its expiry (access never outlives its duration either way).

A Jira webhook (bot/webhooks/jira.py) only says *which* ticket to ask about now (``check_now``): its
content is never trusted; the verdict is the REST API's, as for the poll.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import func, select

from bot.domain.approval_context import JiraTicket
from bot.services import kvstate, notices
from bot.services.context.tickets import TICKETED_KIND, ticket_problem
from bot.services.requesting.request_rows import load_request, load_votes
from bot.services.runtime import Runtime
from connectors.base import ConnectorError
from connectors.jira import ISSUE_KEY, JiraSettings
from storage.tables import AccessRequest, Grant

log = logging.getLogger(__name__)

SCHEDULE_KEY = "tickets:schedule"
END_REASON = "ticket"  # Grant.end_reason of a grant ended with its ticket

_ACTIVE_WITH_TICKET = (select(Grant.id, Grant.request_id, AccessRequest.eligibility, AccessRequest.ticket)
                       .join(AccessRequest, AccessRequest.id == Grant.request_id)  # type: ignore[arg-type]
                       .where(Grant.status == "active", AccessRequest.kind == TICKETED_KIND))


class TicketWatch:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def rules(self) -> dict[str, JiraTicket]:
        """Eligibility name → its Jira rule, for the eligibilities that end access with the ticket."""
        return {e.name: e.ticket_rule.jira for e in self.rt.policy.eligibilities
                if e.ticket_rule is not None and e.ticket_rule.jira.end_with_ticket}

    def interval(self, rules: dict[str, JiraTicket]) -> timedelta:
        conns = self.rt.policy.context_connectors
        return min(JiraSettings.model_validate(conns[r.connector]).poll_interval for r in rules.values())

    async def run_if_due(self) -> int | None:
        """Poll when the interval has passed since any replica last did; None when not due or nothing to watch."""
        rules = self.rules()
        if not rules:
            return None
        if not await kvstate.take_turn(self.rt.db, SCHEDULE_KEY, now=self.rt.clock.now(),
                                       every=self.interval(rules), by=self.rt.instance_id):
            return None
        return await self.poll()

    async def poll(self) -> int:
        """Ask Jira about every active grant's ticket (each ticket once); revoke the grants whose ticket
        no longer qualifies. Returns how many were revoked."""
        return await self._check(None, by="poll")

    async def check_now(self, ticket: str) -> int:
        """Ask Jira now about ``ticket`` (a webhook named it) and revoke the active grants that end with it
        when it no longer qualifies. A key no active grant ends with costs no call. Returns how many were
        revoked."""
        key = ticket.strip().upper()
        if not ISSUE_KEY.fullmatch(key):
            return 0
        return await self._check(key, by="webhook")

    async def _check(self, only: str | None, *, by: str) -> int:
        rt, rules = self.rt, self.rules()
        if not rules:
            return 0
        query = _ACTIVE_WITH_TICKET.where(AccessRequest.eligibility.in_(list(rules)))  # type: ignore[attr-defined]
        if only is not None:
            query = query.where(func.upper(AccessRequest.ticket) == only)
        async with rt.db.sessions() as session:
            rows = (await session.execute(query)).all()
        verdicts: dict[tuple[str, str], str | None] = {}
        ended = 0
        for grant_id, request_id, eligibility, ticket in rows:
            rule = rules[eligibility]
            key = (rule.connector, (ticket or "").upper())
            if key not in verdicts:
                verdicts[key] = await self._verdict(rule, ticket)
            why = verdicts[key]
            if why is not None and await self._end(grant_id, request_id, ticket, why, by=by):
                ended += 1
        if ended:
            rt.wake.set()
        return ended

    async def _verdict(self, rule: JiraTicket, ticket: str | None) -> str | None:
        """Why the grant must end now, or None (it qualifies, or Jira could not be asked this turn)."""
        if not ticket:
            return "it has no ticket"
        try:
            issue = await self.rt.context.jira(self.rt.policy.context_connectors, rule.connector).issue(ticket)
        except ConnectorError as exc:
            log.warning("ticket watch: %s could not be checked, asked again next turn: %s", ticket, exc)
            return None
        if issue is None:
            return f"Jira no longer has the ticket {ticket}"
        problem = ticket_problem(rule, issue)
        return f"its ticket {issue.key} is now {issue.status!r}" if problem else None

    async def _end(self, grant_id: str, request_id: str, ticket: str | None, why: str, *, by: str) -> bool:
        rt, now = self.rt, self.rt.clock.now()
        async with rt.db.transaction() as session:
            # The grant's row lock alone; the request is only read. Where a transaction locks more than one
            # of a grant's membership, grant and request, the order is: the membership's lock, the grant's
            # row, the request's row (the grant pipeline's, and BundleGuard's on the same member). The watch
            # changes only the grant, so it holds one lock and waits for none while holding it.
            g = (await session.execute(select(Grant).where(Grant.id == grant_id).with_for_update())).scalar_one()
            if g.status != "active":
                return False
            req = await load_request(session, request_id)
            g.status, g.end_reason, g.next_attempt_at, g.warn_at = "revoking", END_REASON, now, None
            snap = notices.describe(rt, req, await load_votes(session, req.id), g)
            await notices.record(rt, session, at=now, kind="ticket_ended", actor=notices.SYSTEM, req=req, snap=snap,
                                 detail={"grant": g.id, "ticket": ticket, "reason": why, "noticed_by": by},
                                 text=f"access ends with its ticket: {why}")
            notices.tell_requester(session, at=now, snap=snap, event="revoked",
                                   text=f"Your {req.eligibility} access ({req.id}) is being removed: {why}.")
        return True
