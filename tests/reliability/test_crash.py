"""A short run of the SIGKILL harness (bench/crash_harness.py runs many more trials)."""

from __future__ import annotations

import random
from pathlib import Path

from bench.crash_harness import run_trial


def test_killing_the_bot_mid_loop_loses_and_leaks_nothing(tmp_path: Path) -> None:
    result = run_trial(f"sqlite+aiosqlite:///{tmp_path}/crash.db", tmp_path, kills=3, rng=random.Random(7))
    assert result.grants >= 3 and result.ended == result.grants  # work happened, and all of it finished
    assert result.memberships_without_grant == []
    assert result.overdue == []
    assert result.audit_ok
    assert result.undelivered == 0
