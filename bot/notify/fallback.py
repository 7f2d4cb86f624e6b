"""Slack first, email where it serves people better.

``FallbackNotifier`` wraps the Slack notifier. When the live policy has ``email:`` settings:

- a person-addressed message (approval/review request, requester notice, transition notice) for someone
  listed in ``notify.email`` is emailed instead of DMed;
- a person-addressed message Slack refuses for good (``PermanentFailure``: user not found, deactivated,
  cannot DM) is emailed instead, when ``notify.email_fallback`` is on (the default).

Everything else (channel posts, message updates) goes to Slack unchanged. The policy is read at every
delivery, so a reload that adds or changes ``email:`` takes effect without a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from bot.domain.policy import Policy
from bot.domain.policy_sections import Email
from bot.notify.mail import EmailNotifier
from bot.notify.render import recipient
from bot.services.outbox.dispatcher import Delivery, Notifier, PermanentFailure, deliver_all, deliver_each, fitting
from bot.services.runtime import Runtime

log = logging.getLogger(__name__)


class FallbackNotifier:
    def __init__(self, slack: Notifier, policy: Callable[[], Policy],
                 mailer: Callable[[Email], Notifier] = EmailNotifier) -> None:
        self.slack, self.policy, self._make_mailer = slack, policy, mailer
        self._config: Email | None = None
        self._mailer: Notifier | None = None

    def mailer(self, config: Email | None) -> Notifier | None:
        if config is None:
            return None
        if config is not self._config:
            self._config, self._mailer = config, self._make_mailer(config)
        return self._mailer

    async def deliver(self, kind: str, payload: dict[str, Any]) -> Delivery:
        policy = self.policy()
        mailer = self.mailer(policy.email)
        to = recipient(kind, payload)
        if mailer is None or to is None:
            return await self.slack.deliver(kind, payload)
        if to in policy.notify.email:
            return await mailer.deliver(kind, payload)
        try:
            return await self.slack.deliver(kind, payload)
        except PermanentFailure as exc:
            if not policy.notify.email_fallback:
                raise
            log.warning("slack could not deliver %s to %s (%s): sending it by email", kind, to, exc)
            return await mailer.deliver(kind, payload)


    def batch_fits(self, kind: str, payloads: list[dict[str, Any]]) -> int:
        return fitting(self.slack, kind, payloads)

    async def deliver_batch(self, kind: str, payloads: list[dict[str, Any]]) -> Delivery:
        """A lane's digest (channel posts) goes to Slack as one; anything person-addressed one by one."""
        if all(recipient(kind, p) is None for p in payloads):
            return await deliver_all(self.slack, kind, payloads)
        return await deliver_each(self, [(kind, p) for p in payloads])


def with_email(slack: Notifier, rt: Runtime) -> Notifier:
    """The notifier to run: Slack, plus email whenever the (live) policy configures it."""
    return FallbackNotifier(slack, lambda: rt.policy)
