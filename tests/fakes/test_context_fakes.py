"""The PagerDuty and Jira fakes answer as the vendors' OpenAPI descriptions say (tests/specs/), and are strict
about what a client sends."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import jsonschema
import pytest

from bot.fakes.jira import FakeJira
from bot.fakes.pagerduty import FakePagerDuty
from tests.fakes.openapi_check import check, check_schema, load

NOW = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
# PagerDuty's Oncall schema says of start/end: "If `null`, the on-call is a permanent user on-call." /
# "If `null`, the user does not go off-call." — null in prose, not in the schema's type; and schedule_ids[]
# says "If `null` is provided in the array, it includes permanent on-calls due to direct user escalation
# targets", which have no schedule.
PD = load("pagerduty_rest_subset.json", null_ok=(("Oncall", "start"), ("Oncall", "end"), ("Oncall", "schedule")))
JIRA = load("jira_platform_v3_subset.json")
PD_AUTH = {"Authorization": "Token token=pd-secret", "Accept": "application/vnd.pagerduty+json;version=2"}
JIRA_AUTH = {"Authorization": "Basic " + base64.b64encode(b"bot@example.com:jira-secret").decode()}


@pytest.fixture
async def pd() -> AsyncIterator[FakePagerDuty]:
    fake = FakePagerDuty(token="pd-secret", clock=lambda: NOW)
    alice, bob = fake.add_user("alice@example.com", "Alice"), fake.add_user("bob@example.com", "Bob")
    fake.add_schedule("PSCHED1", "Primary", policy_id="PPOL1")
    fake.put_on_call(alice, policy_id="PPOL1", schedule_id="PSCHED1", level=1, start=NOW - timedelta(hours=1),
                     end=NOW + timedelta(hours=7))
    fake.put_on_call(bob, policy_id="PPOL1", level=2)  # permanent, directly on the policy
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def jira() -> AsyncIterator[FakeJira]:
    fake = FakeJira(email="bot@example.com", api_token="jira-secret")
    fake.add_issue("OPS-1", "Database <failover> stuck", "In Progress")
    await fake.start()
    yield fake
    await fake.stop()


async def get(url: str, headers: dict[str, str], params: list[tuple[str, str]] | None = None) -> tuple[int, object,
                                                                                                        dict[str, str]]:
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers, params=params or []) as r:
        return r.status, await r.json(content_type=None), dict(r.headers)


async def test_pagerduty_oncalls_and_users_match_the_spec(pd: FakePagerDuty) -> None:
    status, body, _ = await get(pd.url + "/oncalls", PD_AUTH, [("escalation_policy_ids[]", "PPOL1")])
    assert status == 200
    check(PD, "/oncalls", "get", 200, body)
    assert isinstance(body, dict) and len(body["oncalls"]) == 2
    # include[]=users expands each user to the full object (type "user", with its email), which the spec's
    # UserReference does not describe: checked by hand, not against the spec.
    _, body, _ = await get(pd.url + "/oncalls", PD_AUTH, [("escalation_policy_ids[]", "PPOL1"),
                                                          ("include[]", "users")])
    assert isinstance(body, dict) and {o["user"]["email"] for o in body["oncalls"]} == {"alice@example.com",
                                                                                         "bob@example.com"}
    status, body, _ = await get(pd.url + "/oncalls", PD_AUTH, [("schedule_ids[]", "PSCHED1")])
    check(PD, "/oncalls", "get", 200, body)
    status, body, _ = await get(pd.url + "/users", PD_AUTH, [("query", "ALICE@example.com")])
    check(PD, "/users", "get", 200, body)
    assert isinstance(body, dict) and [u["email"] for u in body["users"]] == ["alice@example.com"]


async def test_pagerduty_pages_with_offset_limit_and_more(pd: FakePagerDuty) -> None:
    _, first, _ = await get(pd.url + "/oncalls", PD_AUTH, [("limit", "1")])
    _, second, _ = await get(pd.url + "/oncalls", PD_AUTH, [("limit", "1"), ("offset", "1")])
    assert isinstance(first, dict) and isinstance(second, dict)
    assert (first["more"], second["more"], first["total"]) == (True, False, None)


async def test_pagerduty_errors_have_its_shape_and_rate_limit_headers(pd: FakePagerDuty) -> None:
    status, body, _ = await get(pd.url + "/oncalls", {"Authorization": "Bearer pd-secret"})
    assert status == 401
    check(PD, "/oncalls", "get", 401, body)
    status, body, _ = await get(pd.url + "/oncalls", PD_AUTH, [("user_ids", "PU00001")])  # the [] forgotten
    assert status == 400
    check(PD, "/oncalls", "get", 400, body)
    status, body, _ = await get(pd.url + "/oncalls", PD_AUTH, [("since", "2026-12-07T03:00:00Z"),
                                                               ("until", "2026-12-06T03:00:00Z")])
    assert status == 400
    pd.fail_next(429, reset_s=7)
    status, body, headers = await get(pd.url + "/oncalls", PD_AUTH)
    assert status == 429 and headers["ratelimit-reset"] == "7" and headers["ratelimit-remaining"] == "0"
    check(PD, "/oncalls", "get", 429, body)


async def test_a_schema_violation_is_caught() -> None:
    with pytest.raises(jsonschema.ValidationError):
        check(PD, "/oncalls", "get", 200, {"oncalls": [{"escalation_level": "one"}]})
    with pytest.raises(jsonschema.ValidationError):
        check_schema(JIRA, "ErrorCollection", {"errorMessages": "x"})


async def test_jira_issue_matches_the_spec(jira: FakeJira) -> None:
    status, body, _ = await get(jira.url + "/rest/api/3/issue/OPS-1", JIRA_AUTH,
                                [("fields", "summary,status,project")])
    assert status == 200
    check(JIRA, "/rest/api/3/issue/{issueIdOrKey}", "get", 200, body)
    assert isinstance(body, dict) and set(body["fields"]) == {"summary", "status", "project"}
    # IssueBean leaves ``fields`` open; the fields asked for have schemas of their own
    check_schema(JIRA, "StatusDetails", body["fields"]["status"])
    check_schema(JIRA, "ProjectDetails", body["fields"]["project"])


async def test_jira_errors_and_auth(jira: FakeJira) -> None:
    status, body, _ = await get(jira.url + "/rest/api/3/issue/OPS-404", JIRA_AUTH)
    assert status == 404
    check_schema(JIRA, "ErrorCollection", body)  # the operation's 404 has no schema; Jira's errors are these
    status, body, _ = await get(jira.url + "/rest/api/3/issue/OPS-1", {"Authorization": "Basic eA=="})
    assert status == 401
    check_schema(JIRA, "ErrorCollection", body)
    jira.fail_next(429, retry_after=9)
    status, _, headers = await get(jira.url + "/rest/api/3/issue/OPS-1", JIRA_AUTH)
    assert status == 429 and headers["Retry-After"] == "9"


# ---- the operations ``jitbot connectors check`` calls ----------------------------------------------------


async def test_pagerduty_schedule_and_escalation_policy_match_the_spec(pd: FakePagerDuty) -> None:
    status, body, _ = await get(pd.url + "/schedules/PSCHED1", PD_AUTH)
    assert status == 200
    check(PD, "/schedules/{id}", "get", 200, body)
    assert isinstance(body, dict) and body["schedule"]["name"] == "Primary"
    assert [p["id"] for p in body["schedule"]["escalation_policies"]] == ["PPOL1"]
    status, body, _ = await get(pd.url + "/escalation_policies/PPOL1", PD_AUTH)
    assert status == 200
    check(PD, "/escalation_policies/{id}", "get", 200, body)
    for path in ("/schedules/PNOPE", "/escalation_policies/PNOPE"):
        status, body, _ = await get(pd.url + path, PD_AUTH)
        assert status == 404 and isinstance(body, dict) and body["error"]["code"] == 2100
        check(PD, "/schedules/{id}", "get", 404, body)
    status, _, _ = await get(pd.url + "/schedules/PSCHED1", PD_AUTH, [("include[]", "users")])
    assert status == 400  # include[] is not a parameter of GET /schedules/{id}


async def test_a_scoped_pagerduty_token_reaches_only_its_scopes() -> None:
    fake = FakePagerDuty(token="pd-secret", clock=lambda: NOW, scopes={"schedules.read"})
    fake.add_schedule("PSCHED1", "Primary", policy_id="PPOL1")
    await fake.start()
    try:
        assert (await get(fake.url + "/schedules/PSCHED1", PD_AUTH))[0] == 200
        status, body, _ = await get(fake.url + "/oncalls", PD_AUTH)
        assert status == 403
        check(PD, "/oncalls", "get", 403, body)
        assert (await get(fake.url + "/escalation_policies/PPOL1", PD_AUTH))[0] == 403
    finally:
        await fake.stop()


async def test_jira_myself_project_and_statuses_match_the_spec(jira: FakeJira) -> None:
    status, body, _ = await get(jira.url + "/rest/api/3/myself", JIRA_AUTH)
    assert status == 200
    check(JIRA, "/rest/api/3/myself", "get", 200, body)
    status, body, _ = await get(jira.url + "/rest/api/3/project/OPS", JIRA_AUTH)
    assert status == 200
    check(JIRA, "/rest/api/3/project/{projectIdOrKey}", "get", 200, body)
    status, body, _ = await get(jira.url + "/rest/api/3/project/OPS/statuses", JIRA_AUTH)
    assert status == 200
    check(JIRA, "/rest/api/3/project/{projectIdOrKey}/statuses", "get", 200, body)
    assert isinstance(body, list) and {s["name"] for s in body[0]["statuses"]} == {"To Do", "In Progress", "Done"}


async def test_jira_projects_are_case_sensitive_and_unbrowsable_ones_are_not_found(jira: FakeJira) -> None:
    jira.add_project("SEC", "Security", browsable=False)
    for path in ("/rest/api/3/project/ops", "/rest/api/3/project/SEC", "/rest/api/3/project/SEC/statuses",
                 "/rest/api/3/project/NOPE/statuses"):
        status, body, _ = await get(jira.url + path, JIRA_AUTH)
        assert status == 404, path
        check_schema(JIRA, "ErrorCollection", body)
    status, _, _ = await get(jira.url + "/rest/api/3/project/OPS/statuses", JIRA_AUTH, [("expand", "x")])
    assert status == 400  # the statuses operation documents no query parameter
    assert (await get(jira.url + "/rest/api/3/myself", {"Authorization": "Basic eA=="}))[0] == 401
