"""``bench.mass_expiry --idp okta``: the mass expiry through the real Okta connector (the okta SDK over
TLS, wrapped in ``ResilientConnector`` as in production) against the project's strict fake Okta org
(tests/fakes/idp/okta.py) on 127.0.0.1.

With ``--rate R`` the fake enforces Okta's own kind of limit (tests/fakes/idp/okta_limits.py): a budget
of R × window calls per window, windows aligned to the epoch like Okta's minute, ``X-Rate-Limit-*``
headers on every answer and 429 ``E0000047`` over the budget — the connector learns its pace from those
headers alone. The fake runs in the benchmark's process and event loop, so its CPU competes with the
worker's: a harder setting than an IdP elsewhere.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from aiohttp import web

from connectors.base import Connector
from connectors.okta import from_settings
from tests.fakes.idp.okta import FakeOkta
from tests.fakes.idp.okta_limits import OktaRateLimit
from tests.fakes.idp.tls import localhost_tls

TOKEN = "00bench-okta-token"


class RecordedOkta(FakeOkta):
    """Records when each grant's membership was removed (the revoke reaching Okta), and how often."""

    def __init__(self) -> None:
        super().__init__(api_token=TOKEN, page_size=200)
        self.grant_of: dict[str, str] = {}  # Okta user id → grant id
        self.revoked_at: dict[str, float] = {}  # grant id → time the DELETE reached Okta
        self.removals: Counter[str] = Counter()
        self.group = ""

    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        at = time.time()
        response = await super()._gate(request, handler)
        if request.method == "DELETE" and response.status == 204 and request.path.startswith("/api/v1/groups/"):
            uid = request.path.rsplit("/", 1)[1]
            self.removals[uid] += 1
            self.revoked_at.setdefault(self.grant_of.get(uid, uid), at)
        return response

    # what bench.mass_expiry reads of its IdP
    @property
    def revoked_twice(self) -> int:
        return sum(n - 1 for n in self.removals.values() if n > 1)

    @property
    def throttled(self) -> int:
        return self.rate_limit.refused if self.rate_limit else 0

    @property
    def calls(self) -> int:
        return self.api_calls

    def still_members(self) -> int:
        return len(self.members[self.group])

    def windowed_rate(self) -> float:
        """Admitted calls per second over the budget's complete windows opened after the first revoke
        (before it the worker only checked memberships, far below the budget)."""
        if self.rate_limit is None or not self.revoked_at:
            return float("nan")
        return self.rate_limit.achieved_rate(after=min(self.revoked_at.values()))


async def start(n: int, rate: float | None, window: int) -> tuple[RecordedOkta, Connector, dict[str, str], str]:
    """A fake org with ``n`` users, all members of one group; the connector; email → Okta id; group id."""
    context, ca_file = localhost_tls()
    fake = RecordedOkta()
    await fake.start(context)
    ids = {f"user{i}@example.com": fake.add_user(f"user{i}@example.com") for i in range(n)}
    fake.group = fake.add_group("jit-bulk", list(ids.values()))
    fake.grant_of = {uid: f"G-M{i:07d}" for i, uid in enumerate(ids.values())}
    if rate:
        fake.rate_limit = OktaRateLimit(int(round(rate * window)), window)
    connector = from_settings("idp", {"type": "okta", "org_url": fake.base_url, "api_token": TOKEN,
                                      "ca_file": ca_file, "timeout": 10})
    return fake, connector, ids, fake.group
