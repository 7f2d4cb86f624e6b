"""The published API descriptions vendored under tests/specs/ catch a fake or a connector that drifts."""

from __future__ import annotations

import json

from tests.specs.discovery import GOOGLE_CLOUD_IDENTITY, GOOGLE_DIRECTORY, DiscoverySpec
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
