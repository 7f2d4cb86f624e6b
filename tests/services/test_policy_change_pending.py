"""A policy change applies to pending requests at their next decision and at grant time."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import yaml
from sqlalchemy import select

from bot.domain.requests import Decision
from bot.policy_file import LoadedPolicy, parse_policy
from bot.services.clock import ManualClock
from storage.tables import AccessRequest, Grant
from tests.conftest import POLICY, DbFactory
from tests.services.stack import Stack, make_stack

SECURITY = {"approvers": {"groups": ["security"]}, "timeout": "4h"}
LEADS = {"approvers": {"groups": ["leads"]}, "timeout": "4h"}


def _policy(*, layers: list[dict[str, object]], max_duration: str) -> LoadedPolicy:
    doc = yaml.safe_load(POLICY)
    doc["connectors"]["demo"]["groups"]["svc"] = []
    doc["eligibilities"].append({"name": "svc", "description": "Service console", "connector": "demo",
                                 "target": {"group": "svc"}, "requestors": {"groups": ["engineers"]},
                                 "max_duration": max_duration, "default_duration": "1h", "approvals": layers})
    return parse_policy(yaml.safe_dump(doc, sort_keys=False), source="test-policy.yml", env={})


def _swap(s: Stack, loaded: LoadedPolicy) -> None:
    """What a reload does to the runtime's policy (bot/governance/reload.py)."""
    s.rt.loaded = replace(loaded)
    s.rt.directory.invalidate()


async def _request(s: Stack, rid: str) -> AccessRequest:
    async with s.rt.db.sessions() as session:
        return (await session.execute(select(AccessRequest).where(AccessRequest.id == rid))).scalar_one()


async def _grant_of(s: Stack, rid: str) -> Grant:
    async with s.rt.db.sessions() as session:
        return (await session.execute(select(Grant).where(Grant.request_id == rid))).scalar_one()


async def test_tightened_layers_and_maximum_apply_to_a_pending_request(db_factory: DbFactory,
                                                                      clock: ManualClock) -> None:
    s = await make_stack(db_factory(), _policy(layers=[LEADS], max_duration="4h"), clock)
    req = await s.requests.submit(requester="alice@example.com", eligibility="svc", duration=timedelta(hours=4),
                                  justification="migration")
    _swap(s, _policy(layers=[LEADS, SECURITY], max_duration="1h"))
    first = await s.approvals.decide(request_id=req.id, layer=1, approver="bob@example.com",
                                     decision=Decision.APPROVE)
    assert first.status.value == "pending" and first.layer == 2  # one approval no longer approves it
    assert (await _request(s, req.id)).layers == 2
    done = await s.approvals.decide(request_id=req.id, layer=2, approver="dave@example.com",
                                    decision=Decision.APPROVE)
    assert done.status.value == "approved"
    assert (await _request(s, req.id)).duration_s == 3600  # capped to the new maximum
    await s.worker.run_until_idle()
    g = await _grant_of(s, req.id)
    assert g.expires_at is not None and g.granted_at is not None
    assert g.expires_at - g.granted_at == timedelta(hours=1)
    told = [m["text"] for m in s.notifier.of_kind("requester")]
    assert any("shortened to 1h" in t for t in told), told


async def test_loosened_layers_never_break_a_pending_request(db_factory: DbFactory, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), _policy(layers=[LEADS, SECURITY], max_duration="4h"), clock)
    at_one = await s.requests.submit(requester="alice@example.com", eligibility="svc",
                                     duration=timedelta(hours=1), justification="one")
    at_two = await s.requests.submit(requester="erin@example.com", eligibility="svc",
                                     duration=timedelta(hours=1), justification="two")
    await s.approvals.decide(request_id=at_two.id, layer=1, approver="bob@example.com", decision=Decision.APPROVE)
    _swap(s, _policy(layers=[LEADS], max_duration="4h"))
    # layer 1 is now the last: its approval approves the request
    one = await s.approvals.decide(request_id=at_one.id, layer=1, approver="bob@example.com",
                                   decision=Decision.APPROVE)
    assert one.status.value == "approved"
    # already past every layer the policy now has: the next click approves it (layer 1's votes suffice)
    two = await s.approvals.decide(request_id=at_two.id, layer=2, approver="dave@example.com",
                                   decision=Decision.APPROVE)
    assert two.status.value == "approved"
    await s.worker.run_until_idle()
    assert await s.is_member("alice@example.com", "svc") and await s.is_member("erin@example.com", "svc")


async def test_a_maximum_lowered_after_approval_caps_the_grant(db_factory: DbFactory, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), _policy(layers=[], max_duration="4h"), clock)
    req = await s.requests.submit(requester="alice@example.com", eligibility="svc", duration=timedelta(hours=4),
                                  justification="auto", starts_at=clock.now() + timedelta(hours=1))
    _swap(s, _policy(layers=[], max_duration="1h"))
    clock.advance(timedelta(hours=1))
    await s.worker.run_until_idle()
    g = await _grant_of(s, req.id)
    assert g.expires_at is not None and g.granted_at is not None
    assert g.expires_at - g.granted_at == timedelta(hours=1)
