"""The published API descriptions vendored under tests/specs/ catch a fake or a connector that drifts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.specs.discovery import GOOGLE_CLOUD_IDENTITY, GOOGLE_DIRECTORY, DiscoverySpec
from tests.specs.graph_openapi import GRAPH_V1, GraphSpec
from tests.specs.graph_subset import OPERATIONS, SOURCE, build
from tests.specs.openapi import OKTA_MANAGEMENT, OpenApiSpec

MEMBERS = "/admin/directory/v1/groups/eng@example.com/members"


def test_the_vendored_google_document_names_its_source_and_revision() -> None:
    doc = json.loads(GOOGLE_DIRECTORY.read_text())
    assert doc["id"] == "admin:directory_v1" and doc["revision"] == doc["x-vendored"]["revision"]
    assert "google-api-python-client" in doc["x-vendored"]["source"]


def test_the_vendored_cloud_identity_document_names_its_source_and_holds_the_backstop_methods() -> None:
    doc = json.loads(GOOGLE_CLOUD_IDENTITY.read_text())
    assert doc["id"] == "cloudidentity:v1" and doc["revision"] == doc["x-vendored"]["revision"]
    assert "google-api-python-client" in doc["x-vendored"]["source"]
    spec = DiscoverySpec(GOOGLE_CLOUD_IDENTITY)
    modify = "/v1/groups/g1/memberships/m1:modifyMembershipRoles"
    body = {"updateRolesParams": [{"fieldMask": "expiry_detail.expire_time", "membershipRole": {
        "name": "MEMBER", "expiryDetail": {"expireTime": "2026-12-07T10:00:00Z"}}}]}
    assert spec.check("POST", modify, {}, body, 200, {"membership": {"name": "groups/g1/memberships/m1"}}) == []
    assert spec.check("POST", modify, {}, {"updateRoles": []}, 400, None)  # drift in a request is caught


def test_a_conforming_google_exchange_passes() -> None:
    spec = DiscoverySpec(GOOGLE_DIRECTORY)
    answer = {"kind": "admin#directory#members", "members": [
        {"kind": "admin#directory#member", "id": "1", "email": "a@example.com", "role": "MEMBER", "type": "USER",
         "status": "ACTIVE"}], "nextPageToken": "x"}
    assert spec.check("GET", MEMBERS, {"maxResults": "200", "includeDerivedMembership": "true"}, None, 200,
                      answer) == []
    assert spec.check("POST", MEMBERS, {}, {"email": "a@example.com", "role": "MEMBER"}, 409, None) == []


def test_google_drift_in_a_request_or_an_answer_is_caught() -> None:
    spec = DiscoverySpec(GOOGLE_DIRECTORY)
    problems = spec.check("GET", MEMBERS, {"includeDerivedMembership": "yes", "limit": "5"}, None, 200,
                          {"members": [{"id": "1", "mail": "a@example.com"}]})
    assert len(problems) == 3 and any("includeDerivedMembership" in p for p in problems)
    assert any("limit" in p for p in problems) and any("'mail' was unexpected" in p for p in problems)
    assert spec.check("GET", "/admin/directory/v1/groups/g/hasMember/u", {}, None, 200, {"isMember": "yes"})
    assert spec.check("PUT", MEMBERS, {}, None, 200, {}) == [f"PUT {MEMBERS}: no such method in the discovery document"]


USER = {"id": "00u1", "status": "ACTIVE", "created": "2024-01-01T00:00:00.000Z",
        "profile": {"login": "alice@example.com", "email": "alice@example.com", "firstName": "A", "lastName": "B"}}


def test_the_vendored_okta_description_names_its_source() -> None:
    spec = OpenApiSpec(OKTA_MANAGEMENT)
    assert "okta-sdk-python" in spec.doc["info"]["x-vendored"]["source"] and spec.version == "5.1.0"


def test_okta_drift_in_a_request_or_an_answer_is_caught() -> None:
    spec = OpenApiSpec(OKTA_MANAGEMENT)
    assert spec.check("GET", "/api/v1/users", {"search": 'profile.login eq "a"', "limit": "10"}, 200, [USER]) == []
    assert spec.check("DELETE", "/api/v1/users/00u1/sessions", {"oauthTokens": "true"}, 204, None) == []
    problems = spec.check("GET", "/api/v1/users", {"bogus": "1"}, 200, [{**USER, "status": "GONE", "extra": 1}])
    assert len(problems) == 3 and any("bogus" in p for p in problems) and any("'GONE'" in p for p in problems)


def test_okta_user_groups_take_no_paging_parameters() -> None:
    # Settles whether GET /api/v1/users/{id}/groups pages: the management OpenAPI declares no after/limit.
    spec = OpenApiSpec(OKTA_MANAGEMENT)
    assert spec.check("GET", "/api/v1/users/00u1/groups", {}, 200, []) == []
    assert len(spec.check("GET", "/api/v1/users/00u1/groups", {"after": "x", "limit": "2"}, 200, [])) == 2


GRAPH_USER = {"@odata.type": "#microsoft.graph.user", "id": "0b0e2c5e-6c1a-4c4e-9d7a-1b2c3d4e5f60",
              "mail": "alice@example.com", "userPrincipalName": "alice_upn@example.com", "displayName": "Alice",
              "accountEnabled": True}
GRAPH_GROUP = "1c1e2c5e-6c1a-4c4e-9d7a-1b2c3d4e5f61"


def test_the_graph_subset_names_its_source_and_holds_every_listed_operation() -> None:
    spec = GraphSpec(GRAPH_V1)
    assert SOURCE[1] in spec.doc["info"]["x-source"] and "msgraph-metadata" in spec.doc["info"]["x-source"]
    assert {(m, p) for p, item in spec.doc["paths"].items() for m in (k.upper() for k in item)} == set(OPERATIONS)


@pytest.mark.skipif(not os.environ.get("JITBOT_GRAPH_CSDL"), reason="JITBOT_GRAPH_CSDL names no cleanMetadata.xml")
def test_the_graph_subset_is_what_the_builder_writes_from_the_source() -> None:
    # JITBOT_GRAPH_CSDL=<msgraph-metadata at SOURCE's commit>/clean_v10_metadata/cleanMetadata.xml
    assert build(Path(os.environ["JITBOT_GRAPH_CSDL"])) == json.loads(GRAPH_V1.read_text())


def test_a_conforming_graph_exchange_passes() -> None:
    spec = GraphSpec(GRAPH_V1)
    query = {"$filter": "mail eq 'alice@example.com'", "$select": "id,mail,userPrincipalName", "$top": "5"}
    answer = {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users", "value": [GRAPH_USER],
              "@odata.nextLink": "https://graph.microsoft.com/v1.0/users?$skiptoken=x"}
    assert spec.check("GET", "/v1.0/users", query, 200, answer) == []
    assert spec.check("GET", "/v1.0/users", {"$skiptoken": "x"}, 200, answer) == []  # the link Graph wrote
    assert spec.check("POST", f"/v1.0/users/{GRAPH_USER['id']}/checkMemberGroups", {}, 200,
                      {"@odata.context": "x", "value": [GRAPH_GROUP]}, body={"groupIds": [GRAPH_GROUP]}) == []
    assert spec.check("POST", f"/v1.0/groups/{GRAPH_GROUP}/members/$ref", {}, 204, None,
                      body={"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{GRAPH_USER['id']}"}) == []
    assert spec.check("DELETE", f"/v1.0/groups/{GRAPH_GROUP}/members/{GRAPH_USER['id']}/$ref", {}, 204, None,
                      body=None) == []
    members = {"value": [GRAPH_USER, {"@odata.type": "#microsoft.graph.user", "id": "u2"}]}
    assert spec.check("GET", f"/v1.0/groups/{GRAPH_GROUP}/members", {"$select": "id", "$top": "999"}, 200,
                      members) == []


PIM_REQUESTS = "/v1.0/identityGovernance/privilegedAccess/group/assignmentScheduleRequests"
PIM_ASSIGN = {"accessId": "member", "principalId": GRAPH_USER["id"], "groupId": GRAPH_GROUP, "action": "adminAssign",
              "justification": "jitbot grant 1", "scheduleInfo": {
                  "startDateTime": "2026-12-07T06:00:00Z",
                  "expiration": {"type": "afterDateTime", "endDateTime": "2026-12-07T07:00:00Z"}}}


def test_the_graph_subset_holds_the_pim_for_groups_requests_the_expiry_backstop_sends() -> None:
    spec = GraphSpec(GRAPH_V1)
    created = {"id": "r1", "status": "Provisioned", "targetScheduleId": "s1",
               "createdDateTime": "2026-12-07T06:00:00Z", **PIM_ASSIGN}
    assert spec.check("POST", PIM_REQUESTS, {}, 201, {"@odata.context": "x", **created}, body=PIM_ASSIGN) == []
    assert spec.check("GET", PIM_REQUESTS, {"$filter": f"principalId eq '{GRAPH_USER['id']}'", "$top": "1"}, 200,
                      {"value": [created]}) == []
    # Microsoft's description: the actions and expiration types are enumerations, a request's status is never null
    assert spec.check("POST", PIM_REQUESTS, {}, 201, created, body={**PIM_ASSIGN, "action": "assign"})
    assert spec.check("POST", PIM_REQUESTS, {}, 201, created, body={
        **PIM_ASSIGN, "scheduleInfo": {"expiration": {"type": "afterTime", "endDateTime": "2026-12-07T07:00:00Z"}}})
    assert spec.check("POST", PIM_REQUESTS, {}, 201, {**created, "status": None}, body=PIM_ASSIGN)
    assert spec.check("POST", PIM_REQUESTS, {}, 201, created, body={**PIM_ASSIGN, "roleDefinitionId": "member"})


def test_graph_drift_in_a_request_or_an_answer_is_caught() -> None:
    spec = GraphSpec(GRAPH_V1)
    problems = spec.check("GET", "/v1.0/users", {"$select": "id,emailAddress", "$limit": "5"}, 200,
                          {"value": [{**GRAPH_USER, "accountEnabled": "yes"}]})
    assert any("$limit" in p for p in problems) and any("'emailAddress'" in p for p in problems)
    assert any("'yes' is not of type" in p for p in problems)
    assert "get /users answer['value', 0]: Unevaluated properties are not allowed ('nickname' was unexpected)" in (
        spec.check("GET", "/v1.0/users", {}, 200, {"value": [{**GRAPH_USER, "nickname": "al"}]}))
    # a member typed as a user is held to the user's properties, not only directoryObject's
    assert spec.check("GET", f"/v1.0/groups/{GRAPH_GROUP}/members", {}, 200,
                      {"value": [{**GRAPH_USER, "nickname": "al"}]})
    assert spec.check("POST", f"/v1.0/users/{GRAPH_USER['id']}/checkMemberGroups", {}, 200, {"value": []},
                      body={"groupIds": GRAPH_GROUP})
    assert spec.check("POST", f"/v1.0/groups/{GRAPH_GROUP}/members/$ref", {}, 204, None, body=None)
    assert spec.check("POST", f"/v1.0/groups/{GRAPH_GROUP}/members/$ref", {}, 204, None,
                      body={"@odata.id": 5})
    assert spec.check("GET", "/v1.0/users/x/transitiveMemberOf", {}, 200, {"value": []})
