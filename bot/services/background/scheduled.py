"""Calendar jobs the worker runs each tick: the weekly access-review post (ending with an audit anchor),
the hourly audit anchors (bot/services/auditing/audit_anchor.py) and the transition off standing access. Exactly
once across replicas: each job's progress is a ``kv`` row changed by compare-and-set in the same
transaction that queues its messages.

``kv['last_review_post']`` = ``{"fired_for": ISO time, "schedule": "<cron>@<tz>"}``: the cron fire time
last posted for. The first tick under a schedule only records "now", so a new deployment does not
post at once; afterwards the latest missed fire time is posted once (a worker that was down posts one
review, not one per missed week).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from apscheduler.triggers.cron import CronTrigger
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services import kvstate
from bot.services.auditing.audit import append_event
from bot.services.auditing.audit_anchor import AuditAnchors, anchor_text, current_anchor
from bot.services.outbox.dispatcher import enqueue
from bot.services.review import Review, build_review
from bot.services.review_render import as_markdown
from bot.services.runtime import Runtime

REVIEW_KEY = "last_review_post"
REVIEW_CHARS = 39000  # the review post is cut at this length when delivered (bot/slack/notifier.py)


def latest_fire(trigger: CronTrigger, after: datetime, now: datetime) -> datetime | None:
    """The last fire time in ``(after, now]``, or None."""
    found = None
    probe = after + timedelta(microseconds=1)
    for _ in range(10_000):
        nxt = trigger.get_next_fire_time(None, probe)
        if nxt is None or nxt > now:
            break
        found, probe = nxt, nxt + timedelta(microseconds=1)
    return found


class ScheduledJobs:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def run_due(self) -> int:
        """Run every calendar job that is due; returns how many acted."""
        from bot.services.transition import TransitionService

        done = await self.post_review_if_due()
        done += await AuditAnchors(self.rt).post_if_due()
        return done + await TransitionService(self.rt).run_due()

    async def post_review_if_due(self) -> int:
        reports = self.rt.policy.reports
        if not reports.enabled:
            return 0
        now = self.rt.clock.now()
        schedule = f"{reports.cron}@{reports.timezone}"
        trigger = CronTrigger.from_crontab(reports.cron, timezone=reports.timezone)
        async with self.rt.db.sessions() as session:
            current = await kvstate.read(session, REVIEW_KEY)
        if current is not None and current.get("schedule") == schedule:
            fire = latest_fire(trigger, datetime.fromisoformat(current["fired_for"]), now)
            if fire is None:
                return 0
            review: Review | None = await build_review(self.rt.db, self.rt.policy, since=now - reports.period,
                                                       until=now)
            # the chain as it stood for this review, to be kept outside the database (audit_anchor.py); the
            # review is shortened if need be so that the post's length limit never cuts the anchor off
            anchor = "\n\n" + anchor_text(await current_anchor(self.rt.db, now=now))
            text = as_markdown(review)
            if len(text) + len(anchor) > REVIEW_CHARS:
                text = text[:REVIEW_CHARS - len(anchor) - 1] + "…"
            text += anchor
        else:
            fire, text, review = None, "", None

        def decide(value: kvstate.Value | None) -> kvstate.Value | None:
            if value != current:  # another replica moved it since we looked
                return None
            return {"fired_for": (fire or now).isoformat(), "schedule": schedule, "posted": fire is not None}

        async def then(session: AsyncSession, value: kvstate.Value) -> None:
            if not value["posted"] or review is None:
                return
            detail: dict[str, Any] = {"fired_for": value["fired_for"], "hours_granted": review.total_hours,
                                      "reduction_pct": review.total_reduction_pct}
            await append_event(session, at=now, kind="review_posted", actor="jitbot", detail=detail)
            enqueue(session, at=now, order_key="report", kind="report",
                    payload={"text": text, "since": review.since.isoformat(), "until": review.until.isoformat(),
                             "weekly": [[w.isoformat(), g, b] for w, g, b in review.weekly],
                             "attach_chart": self.rt.policy.reports.attach_chart})

        written = await kvstate.compare_and_set(self.rt.db, REVIEW_KEY, decide, then)
        return 1 if written and written["posted"] else 0
