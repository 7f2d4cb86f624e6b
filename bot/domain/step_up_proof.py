"""What an approval that needs step-up must carry.

An approval on a layer with ``step_up`` is recorded only with a ``StepUpProof``: made by bot/stepup/
after the approver signed in again at the OpenID Connect provider (fresh, with the required ``amr`` /
``acr``) as the very person who clicked. Without it the approval service raises ``StepUpRequired``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.domain.requests import PolicyViolation
from bot.domain.step_up import StepUp


@dataclass(frozen=True)
class StepUpProof:
    """That ``approver`` signed in afresh at the provider, as required, to approve ``request_id``'s ``layer``."""

    request_id: str
    layer: int
    approver: str
    subject: str  # the ID token's ``sub``
    auth_time: datetime
    ticket: str  # the step-up link's id (its hash), for the audit log

    def covers(self, *, request_id: str, layer: int, approver: str) -> bool:
        return (self.request_id, self.layer, self.approver) == (request_id, layer, approver.strip().lower())


class StepUpRequired(PolicyViolation):
    """The approval needs a fresh sign-in at the provider first (the Slack surface answers with a link)."""

    def __init__(self, step_up: StepUp, *, request_id: str, layer: int) -> None:
        super().__init__(f"Approving {request_id} needs a fresh sign-in at your identity provider; "
                         "use the Approve button in Slack to get a sign-in link.")
        self.step_up, self.request_id, self.layer = step_up, request_id, layer
