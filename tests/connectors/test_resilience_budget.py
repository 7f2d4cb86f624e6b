"""Pacing fed by the budget the provider states in every answer (Okta's ``X-Rate-Limit-Remaining`` and
``-Reset``): once it is spent, calls wait for the reset instead of meeting a 429. Virtual time."""

from __future__ import annotations

import asyncio
import math

from connectors.base import IdpUser, RateLimited, Target, TargetKind, report_budget
from connectors.resilience import ResilientConnector
from tests.connectors.conformance import RecordingSleep

TARGET = Target(TargetKind.GROUP, "g")


class BudgetIdp:
    """``limit`` calls per ``window`` virtual seconds (windows aligned like Okta's minute), the budget
    stated in every answer, 429 over it. With ``states_budget=False`` it says nothing until a 429."""

    name = "idp"

    def __init__(self, clock: RecordingSleep, limit: int, window: float, *, states_budget: bool = True) -> None:
        self.clock, self.limit, self.window, self.states_budget = clock, limit, window, states_budget
        self.start, self.used, self.refused, self.done = -1.0, 0, 0, 0
        self.sent_at: list[float] = []

    async def revoke(self, user: IdpUser, target: Target, *, grant_id: str) -> None:
        await asyncio.sleep(0)  # an answer takes a turn of the loop: other calls get under way meanwhile
        now = self.clock.now
        start = math.floor(now / self.window) * self.window
        if start != self.start:
            self.start, self.used = start, 0
        reset_in = start + self.window - now
        if self.used >= self.limit:
            self.refused += 1
            raise RateLimited("429", retry_after=reset_in)
        self.used += 1
        self.done += 1
        self.sent_at.append(now)
        if self.states_budget:
            report_budget(self.limit - self.used, reset_in)

    async def aclose(self) -> None:
        return None


def _wrapped(idp: BudgetIdp, clock: RecordingSleep, concurrency: int) -> ResilientConnector:
    return ResilientConnector(idp, sleep=clock, monotonic=clock.monotonic, jitter=lambda: 1.0,  # type: ignore[arg-type]
                              max_concurrency=concurrency, max_attempts=3)


async def _revoke_all(connector: ResilientConnector, n: int) -> None:
    user = IdpUser("u1", "u1@example.com")
    await asyncio.gather(*(connector.revoke(user, TARGET, grant_id=f"g{i}") for i in range(n)))


async def test_calls_wait_for_the_reset_once_the_stated_budget_is_spent() -> None:
    clock = RecordingSleep()
    idp = BudgetIdp(clock, limit=5, window=4.0)
    await _revoke_all(_wrapped(idp, clock, concurrency=1), 25)
    assert idp.done == 25 and idp.refused == 0  # never a 429
    assert [t // 4.0 for t in idp.sent_at] == [w for w in range(5) for _ in range(5)]  # five per window


async def test_calls_under_way_count_against_the_stated_budget() -> None:
    clock = RecordingSleep()
    idp = BudgetIdp(clock, limit=5, window=4.0)
    await _revoke_all(_wrapped(idp, clock, concurrency=4), 40)
    assert idp.done == 40
    # Before the first answer nothing is known: the first four go out together. From then on the calls
    # under way are counted as spent, so no window is overrun again.
    assert idp.refused == 0


async def test_a_provider_that_states_no_budget_is_still_paced_by_its_429s() -> None:
    clock = RecordingSleep()
    idp = BudgetIdp(clock, limit=5, window=4.0, states_budget=False)
    await _revoke_all(_wrapped(idp, clock, concurrency=1), 25)
    assert idp.done == 25 and 1 <= idp.refused <= 10  # it learns from the 429s instead

