"""The time window an approved grant has: when it became due, until when a failing grant is tried again,
and when the access it gives ends. A grant becomes due at its approval, or at its scheduled start if later;
the approved duration runs from then, so time spent waiting on the identity provider or on a claim comes
out of the window, never on top of it. ``GrantService`` (``grants.py``) carries grants out within it and
``grant_outcomes.py`` records their expiry and their retry deadline from it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from bot.domain.policy import Eligibility
from bot.services.requesting.final_approval import allowed_seconds
from bot.services.runtime import Runtime
from storage.tables import AccessRequest


def grant_due(req: Any) -> datetime:
    """When an approved request's grant became due: its approval, or its scheduled start if later."""
    due: datetime = max(req.decided_at or req.created_at, req.starts_at or req.created_at)
    return due



def grant_deadline(rt: Runtime, req: AccessRequest) -> datetime:
    """Until when a grant failing transiently is tried again: policy ``settings.grant_retry_for`` (default:
    the request's own duration) after it became due (approval, or the scheduled start)."""
    retry_for = rt.policy.settings.grant_retry_for or timedelta(seconds=req.duration_s)
    return grant_due(req) + retry_for



def window_end(req: Any) -> datetime:
    """The end of the window the approval covers: the approved duration from when the grant became due.
    Time spent waiting (on the identity provider, on a claim) comes out of it, never on top of it."""
    return grant_due(req) + timedelta(seconds=req.duration_s)



def grant_expiry(req: AccessRequest, elig: Eligibility | None, now: datetime) -> datetime:
    """When a grant carried out ``now`` ends: the duration the policy allows now (``allowed_seconds``)
    from now, and never past the approved window (``window_end``)."""
    return min(now + timedelta(seconds=allowed_seconds(req, elig)), window_end(req))
