"""A revocation whose decision failed after its claim committed is taken again by the next pass, not
after the claim's five-minute lease: on PostgreSQL the pipeline claims a chunk in one transaction and
decides it in the next (docs/architecture.md, "Row locks and their order"), and access must not outlive
its approval by a lease because the second one was a deadlock's victim or lost its connection."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.policy_file import parse_policy
from bot.services.access.revocation import Revoker
from bot.services.clock import ManualClock
from tests.conftest import POLICY, DbFactory
from tests.services.stack import make_stack


async def test_a_revocation_whose_decision_failed_is_taken_again_by_the_next_pass(
        db_factory: DbFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    s = await make_stack(db_factory(), parse_policy(POLICY, source="test", env={}), clock)
    await s.requests.submit(requester="alice@example.com", eligibility="readonly", duration=timedelta(hours=1),
                            justification="logs")
    await s.worker.run_until_idle()
    assert await s.is_member("alice@example.com", "readonly")
    clock.advance(timedelta(hours=1, seconds=1))

    real, failed = Revoker._decide, []

    async def lost_connection(self: Revoker, *args: object) -> object:
        if args[1] and not failed:  # grant ids to decide: the first decision fails
            failed.append(list(args[1]))  # type: ignore[call-overload]
            raise ConnectionResetError("the database connection was lost")
        return await real(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Revoker, "_decide", lost_connection)
    with pytest.raises(ConnectionResetError):
        await s.grants.run_expiries()
    assert failed and await s.is_member("alice@example.com", "readonly")
    await s.grants.run_expiries()  # the same moment, well within the lease
    assert not await s.is_member("alice@example.com", "readonly")
