"""The IdP-side expiry backstop: where the identity provider can end a membership at a time of its own,
jitbot sets that time to the grant's expiry when it adds the membership and moves it when the grant is
extended. If jitbot is down past a grant's expiry, the provider removes the member itself.

A connector offers it by implementing ``ExpiryBackstop`` and turning it on with ``expiry_backstop: true``
in its policy settings (it needs scopes or a licence beyond plain group management):

- Google: Cloud Identity Groups API memberships with ``roles[].expiryDetail.expireTime``
  (``connectors/google_expiry.py``);
- Entra ID: PIM for Groups assignment schedules with an expiration (``connectors/entra_pim.py``).

Okta, OneLogin and PingOne have no membership expiry in the APIs jitbot uses (``NONE`` says so in
``jitbot connectors check``).

With the backstop on, ``grant`` sets the provider's expiry to ``expires_at`` on a membership it adds (never
on standing access it finds) in the same call that adds it, so no crash leaves a membership without one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

from connectors.base import IdpUser, Target

# Connector types whose provider has no membership expiry that jitbot can set (``connectors check``).
NONE: dict[str, str] = {
    "okta": "Okta group memberships have no expiry in the Management API; jitbot's own revocation is the only end.",
    "onelogin": "OneLogin role assignments have no expiry in the API; jitbot's own revocation is the only end.",
    "pingone": "PingOne group memberships have no expiry in the Platform API; jitbot's own revocation is the "
               "only end.",
}


@runtime_checkable
class ExpiryBackstop(Protocol):
    """Optional capability: the provider ends a membership at a time jitbot sets."""

    @property
    def expiry_backstop(self) -> bool:
        """Whether the backstop is turned on (``expiry_backstop: true`` in the connector's settings)."""
        ...

    async def move_expiry(self, user: IdpUser, target: Target, *, expires_at: datetime) -> None:
        """Move the provider's expiry of ``user``'s membership of ``target`` (added by jitbot) to
        ``expires_at``. ``NotFound`` when there is no such membership (it has ended)."""
        ...


def expiry_backstop(connector: object) -> ExpiryBackstop | None:
    """``connector`` (or the connector it wraps, ``.inner``) as an ``ExpiryBackstop`` that is turned on."""
    for candidate in (connector, getattr(connector, "inner", connector)):
        if isinstance(candidate, ExpiryBackstop) and candidate.expiry_backstop:
            return candidate
    return None
