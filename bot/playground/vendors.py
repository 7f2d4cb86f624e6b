"""The playground's PagerDuty and Jira: the strict fakes (bot/fakes/), seeded from the demo policy.

Every persona is a PagerDuty user; the first requester is on call now, level 1, in every schedule the
policy's on-call rules name, for a four-hour shift (jump the clock past it to see ``end_with_shift``).
Each Jira project a ticket rule names has ``<KEY>-101`` in the rule's first status and ``<KEY>-102``
done. The policy's context connectors are pointed at the fakes (their ``base_url``); their tokens are
the policy's own, so the fakes check them as the vendors would.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

from bot.fakes.jira import FakeJira
from bot.fakes.pagerduty import FakePagerDuty
from bot.policy_file import LoadedPolicy
from bot.services.clock import Clock

SHIFT = timedelta(hours=4)


class PlaygroundVendors:
    def __init__(self, loaded: LoadedPolicy, clock: Clock, emails: list[str], requester: str | None) -> None:
        self.loaded, self.clock, self.emails, self.requester = loaded, clock, emails, requester
        self.pagerduty: dict[str, FakePagerDuty] = {}
        self.jira: dict[str, FakeJira] = {}

    async def start(self) -> LoadedPolicy:
        """Start a fake per context connector and return the policy pointed at them."""
        policy = self.loaded.policy
        settings: dict[str, dict[str, Any]] = {}
        for name, conf in policy.context_connectors.items():
            if conf.get("type") == "pagerduty":
                pd = FakePagerDuty(token=str(conf.get("token", "")), clock=self.clock.now)
                self._seed_pagerduty(name, pd)
                self.pagerduty[name] = await pd.start()
                settings[name] = {**conf, "base_url": pd.url}
            elif conf.get("type") == "jira":
                jira = FakeJira(email=str(conf.get("email", "")), api_token=str(conf.get("api_token", "")))
                self._seed_jira(name, jira)
                self.jira[name] = await jira.start()
                settings[name] = {**conf, "base_url": jira.url}
        pointed = policy.model_copy(update={"context_connectors": {**policy.context_connectors, **settings}})
        return dataclasses.replace(self.loaded, policy=pointed)

    def _seed_pagerduty(self, name: str, pd: FakePagerDuty) -> None:
        ids = {email: pd.add_user(email, email.split("@")[0].title()) for email in self.emails}
        now = self.clock.now()
        for e in self.loaded.policy.eligibilities:
            for when in (e.auto_approve_when, *(layer.auto_approve_when for layer in e.approvals)):
                if when is None or when.on_call.pagerduty.connector != name:
                    continue
                rule = when.on_call.pagerduty
                policy_id = rule.escalation_policies[0] if rule.escalation_policies else "PDEMOEP"
                level = rule.escalation_levels[0] if rule.escalation_levels else 1
                for schedule in rule.schedules or (None,):
                    if schedule is not None:
                        pd.add_schedule(schedule, f"Demo rotation {schedule}", policy_id=policy_id)
                    if self.requester in ids:
                        pd.put_on_call(ids[self.requester], policy_id=policy_id, level=level, schedule_id=schedule,
                                       start=now - timedelta(hours=1), end=now + SHIFT)

    def _seed_jira(self, name: str, jira: FakeJira) -> None:
        for e in self.loaded.policy.eligibilities:
            rule = e.ticket_rule
            if rule is None or rule.jira.connector != name:
                continue
            for project in rule.jira.projects:
                if f"{project}-101" not in jira.issues:
                    jira.add_issue(f"{project}-101", "Checkout latency <p99> over 2 s", rule.jira.statuses[0])
                    jira.add_issue(f"{project}-102", "Resolved disk alert", "Done", "done")

    async def aclose(self) -> None:
        for pd in self.pagerduty.values():
            await pd.stop()
        for jira in self.jira.values():
            await jira.stop()
