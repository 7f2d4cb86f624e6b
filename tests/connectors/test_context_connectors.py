"""The PagerDuty and Jira clients against their strict fakes: requests as documented, typed errors, paging."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from bot.fakes.jira import FakeJira
from bot.fakes.pagerduty import FakePagerDuty
from connectors import jira, pagerduty
from connectors.base import ConfigError, PermissionDenied, RateLimited, Transient

NOW = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)


@pytest.fixture
async def pd() -> AsyncIterator[FakePagerDuty]:
    fake = FakePagerDuty(token="pd-secret", clock=lambda: NOW)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def fake_jira() -> AsyncIterator[FakeJira]:
    fake = FakeJira(email="bot@example.com", api_token="jira-secret")
    fake.add_issue("OPS-7", "Disk full on db-3", "In Progress")
    await fake.start()
    yield fake
    await fake.stop()


def pd_client(fake: FakePagerDuty, token: str = "pd-secret") -> pagerduty.PagerDutyClient:
    return pagerduty.from_settings("pd", {"type": "pagerduty", "token": token, "base_url": fake.url})


def jira_client(fake: FakeJira, token: str = "jira-secret") -> jira.JiraClient:
    return jira.from_settings("jira", {"type": "jira", "base_url": fake.url, "email": "bot@example.com",
                                       "api_token": token})


async def test_on_call_now_is_found_by_email_for_schedules_and_policies(pd: FakePagerDuty) -> None:
    alice = pd.add_user("Alice@Example.com", "Alice")
    pd.add_user("alice.other@example.com", "Alice Other")  # matches the query too; not her email
    pd.add_schedule("PSCHED1", "Primary", policy_id="PPOL1")
    pd.put_on_call(alice, policy_id="PPOL1", schedule_id="PSCHED1", level=1, start=NOW - timedelta(hours=1),
                   end=NOW + timedelta(hours=5))
    pd.put_on_call(alice, policy_id="PPOL2", level=2)  # permanent, directly on another policy
    pd.put_on_call(alice, policy_id="PPOL1", schedule_id="PSCHED1", level=1, start=NOW + timedelta(days=1),
                   end=NOW + timedelta(days=2))  # a later shift: not now
    client = pd_client(pd)
    try:
        shifts = await client.on_call("alice@example.com", at=NOW, schedules=("PSCHED1",),
                                      escalation_policies=("PPOL2",))
    finally:
        await client.aclose()
    assert sorted((s.escalation_policy, s.level, s.schedule, s.end) for s in shifts) == [
        ("PPOL1", 1, "PSCHED1", NOW + timedelta(hours=5)), ("PPOL2", 2, None, None)]
    paths = [p for p, _ in pd.requests]
    assert paths == ["/users", "/oncalls", "/oncalls"]  # schedules and policies asked apart (filters AND)
    assert f"user_ids[]={alice}" in pd.requests[1][1] and "schedule_ids[]=PSCHED1" in pd.requests[1][1]


async def test_paging_follows_more(pd: FakePagerDuty) -> None:
    bob = pd.add_user("bob@example.com", "Bob")
    for level in range(1, 251):  # 250 on-call entries: three pages of 100
        pd.put_on_call(bob, policy_id="PPOL1", schedule_id="PS", level=level)
    client = pd_client(pd)
    try:
        shifts = await client.on_call("bob@example.com", at=NOW, schedules=("PS",))
    finally:
        await client.aclose()
    assert len(shifts) == 250 and client.calls == 1 + 3


async def test_unknown_person_is_on_call_nowhere(pd: FakePagerDuty) -> None:
    client = pd_client(pd)
    try:
        assert await client.on_call("nobody@example.com", at=NOW, schedules=("PS",)) == []
    finally:
        await client.aclose()
    assert client.calls == 1


async def test_pagerduty_errors_are_typed_and_never_carry_the_token(pd: FakePagerDuty) -> None:
    pd.add_user("alice@example.com", "Alice")
    client = pd_client(pd, token="wrong-token")
    with pytest.raises(PermissionDenied) as denied:
        await client.user_id("alice@example.com")
    assert "wrong-token" not in str(denied.value) and "Authentication failed" in str(denied.value)
    await client.aclose()
    client = pd_client(pd)
    pd.fail_next(429, reset_s=7)
    with pytest.raises(RateLimited) as limited:
        await client.user_id("alice@example.com")
    assert limited.value.retry_after == 7
    pd.fail_next(503)
    with pytest.raises(Transient):
        await client.user_id("alice@example.com")
    await client.aclose()
    await pd.stop()
    client = pd_client(pd)
    with pytest.raises(Transient):
        await client.user_id("alice@example.com")
    await client.aclose()


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="token"):
        pagerduty.from_settings("pd", {"type": "pagerduty"})
    with pytest.raises(ConfigError, match="api_token"):
        jira.from_settings("jira", {"type": "jira", "base_url": "https://x.atlassian.net", "email": "a@b"})


async def test_jira_issue_with_basic_auth_and_only_the_fields_asked(fake_jira: FakeJira) -> None:
    client = jira_client(fake_jira)
    try:
        issue = await client.issue("ops-7")
        missing = await client.issue("OPS-8")
        malformed = await client.issue("not a key")
    finally:
        await client.aclose()
    assert issue is not None and (issue.key, issue.summary, issue.status, issue.project) == (
        "OPS-7", "Disk full on db-3", "In Progress", "OPS")
    assert issue.url == f"{fake_jira.url}/browse/OPS-7"
    assert missing is None and malformed is None
    assert fake_jira.requests == [("/rest/api/3/issue/OPS-7", "fields=summary,status,project"),
                                  ("/rest/api/3/issue/OPS-8", "fields=summary,status,project")]


async def test_jira_errors_are_typed(fake_jira: FakeJira) -> None:
    client = jira_client(fake_jira, token="s3cr3t-token")
    with pytest.raises(PermissionDenied) as denied:
        await client.issue("OPS-7")
    assert "s3cr3t" not in str(denied.value) and "must be authenticated" in str(denied.value)
    await client.aclose()
    client = jira_client(fake_jira)
    fake_jira.fail_next(429, retry_after=9)
    with pytest.raises(RateLimited) as limited:
        await client.issue("OPS-7")
    assert limited.value.retry_after == 9
    fake_jira.fail_next(503)
    with pytest.raises(Transient):
        await client.issue("OPS-7")
    await client.aclose()
