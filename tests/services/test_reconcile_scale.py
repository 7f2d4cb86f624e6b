"""The reconciliation sweep's own work grows with the target, not with its square.

The sweep runs on the worker's event loop, beside the revocations: work that grows as grants × members
holds every revocation back while it runs (10,000 of each held the loop for seconds in
``bench.slack_tiers``). Counted here in reads of the members' ``id`` and ``email``, never timed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import RecordingIdp
from bench.scale import fill, worker_for
from bot.services.access.reconcile import ReconcileService
from bot.services.clock import ManualClock
from connectors.base import IdpUser
from storage.db import Database

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


class _CountedUser(IdpUser):
    """An IdP member that counts how often the sweep reads who it is."""

    __slots__ = ()
    reads = [0]

    def __getattribute__(self, name: str) -> Any:
        if name in ("id", "email"):
            _CountedUser.reads[0] += 1
        return super().__getattribute__(name)


async def _sweep_reads(path: Path, n: int) -> tuple[int, list[str]]:
    db = Database(f"sqlite+aiosqlite:///{path}")
    await db.migrate()
    await fill(db, historical=0, active=n, now=NOW - timedelta(hours=1))  # n people, one grant each
    worker = await worker_for(db, ManualClock(NOW))
    idp = worker.rt.connectors["idp"]
    assert isinstance(idp, RecordingIdp)
    members = [f"u{i}@example.com" for i in range(n)]
    idp.members["g"] = set(members[1:])  # the first one's membership has vanished at the IdP

    async def list_members(group: str) -> list[IdpUser]:
        return [_CountedUser(id=e, email=e) for e in sorted(idp.members.get(group, ()))]

    idp.list_members = list_members  # type: ignore[method-assign]
    rec = ReconcileService(worker.rt)
    first = await rec.sweep()  # records the baseline, and finds the vanished membership
    _CountedUser.reads[0] = 0
    await rec.sweep()  # the same findings: counted
    await db.dispose()
    return _CountedUser.reads[0], first.vanished


async def test_the_sweep_reads_each_member_a_bounded_number_of_times(tmp_path: Path) -> None:
    small, vanished_small = await _sweep_reads(tmp_path / "small.db", 500)
    large, vanished_large = await _sweep_reads(tmp_path / "large.db", 2000)
    assert vanished_small == ["G-S00000000"] and vanished_large == ["G-S00000000"]
    # linear: four times the grants and members, about four times the reads (not sixteen)
    assert large <= 5 * small, (small, large)
    assert large <= 20 * 2000, large
