"""One policy version for the fleet: a change applied by one replica is the one every replica decides under."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from bot.domain.requests import Decision, PolicyViolation
from bot.governance.applied import read_version
from bot.governance.reload import PolicyReloader
from bot.policy_file import load_policy
from bot.services.clock import ManualClock
from storage.tables import AccessRequest
from tests.conftest import POLICY, DbFactory
from tests.services.stack import Stack, make_stack


def _tightened() -> str:
    """readonly: at most 1h; prod-admin's first layer: carol only (bob, a lead, is no longer an approver)."""
    doc = yaml.safe_load(POLICY)
    for e in doc["eligibilities"]:
        if e["name"] == "readonly":
            e["max_duration"] = "1h"
        if e["name"] == "prod-admin":
            e["approvals"][0]["approvers"] = {"users": ["carol@example.com"]}
    return yaml.safe_dump(doc, sort_keys=False)


async def _replicas(db_factory: DbFactory, tmp_path: Path) -> tuple[Stack, PolicyReloader, Stack, PolicyReloader]:
    """Two replicas on one database, each with its own copy of the file, both following the applied version
    (their follow loops are not started: only a decision's own check can bring B up to date here)."""
    clock = ManualClock()
    stacks: list[Stack] = []
    reloaders: list[PolicyReloader] = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.yml"
        path.write_text(POLICY)
        s = await make_stack(db_factory(), load_policy(path), clock)
        reloader = PolicyReloader(s.rt, str(path))
        assert await reloader.reload()
        s.rt.follower = reloader
        stacks.append(s)
        reloaders.append(reloader)
    return stacks[0], reloaders[0], stacks[1], reloaders[1]


async def test_a_change_applied_by_one_replica_governs_the_next_decision_on_another(
        db_factory: DbFactory, tmp_path: Path) -> None:
    a, reload_a, b, _ = await _replicas(db_factory, tmp_path)
    (tmp_path / "a.yml").write_text(_tightened())
    assert await reload_a.reload()  # a SIGHUP to replica A only
    assert (await read_version(a.rt.db))[0] == 2 and b.rt.policy_version == 1  # B has not looked yet
    with pytest.raises(PolicyViolation, match="at most 1h"):
        await b.requests.submit(requester="alice@example.com", eligibility="readonly",
                                duration=timedelta(hours=4), justification="look")
    assert b.rt.policy_version == 2 and b.rt.eligibility("readonly").max_duration == timedelta(hours=1)  # type: ignore[union-attr]
    async with b.rt.db.sessions() as session:
        assert (await session.execute(select(AccessRequest).where(AccessRequest.eligibility == "readonly"))
                ).first() is None


async def test_a_removed_approver_is_refused_by_a_replica_that_had_not_reloaded(
        db_factory: DbFactory, tmp_path: Path) -> None:
    a, reload_a, b, _ = await _replicas(db_factory, tmp_path)
    req = await a.requests.submit(requester="alice@example.com", eligibility="prod-admin",
                                  duration=timedelta(hours=1), justification="deploy", ticket="OPS-1")
    (tmp_path / "a.yml").write_text(_tightened())
    assert await reload_a.reload()
    with pytest.raises(PolicyViolation, match="not an approver"):
        await b.approvals.decide(request_id=req.id, layer=1, approver="bob@example.com", decision=Decision.APPROVE)
    ok = await b.approvals.decide(request_id=req.id, layer=1, approver="carol@example.com",
                                  decision=Decision.APPROVE)
    assert ok.layer == 2


async def test_an_idle_replica_catches_up_on_its_own_and_reports_its_version(
        db_factory: DbFactory, tmp_path: Path) -> None:
    a, reload_a, b, reload_b = await _replicas(db_factory, tmp_path)
    (tmp_path / "a.yml").write_text(_tightened())
    assert await reload_a.reload()
    assert await reload_b.catch_up() == 2  # what B's follow loop does every FOLLOW_INTERVAL
    assert b.rt.loaded.sha256 == a.rt.loaded.sha256
    assert await reload_b.catch_up() == 2  # nothing newer: nothing loaded again
