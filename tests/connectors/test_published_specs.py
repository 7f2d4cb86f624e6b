"""The published API descriptions vendored under tests/specs/ catch a fake or a connector that drifts."""

from __future__ import annotations

import json

from tests.specs.discovery import GOOGLE_DIRECTORY, DiscoverySpec

MEMBERS = "/admin/directory/v1/groups/eng@example.com/members"


def test_the_vendored_google_document_names_its_source_and_revision() -> None:
    doc = json.loads(GOOGLE_DIRECTORY.read_text())
    assert doc["id"] == "admin:directory_v1" and doc["revision"] == doc["x-vendored"]["revision"]
    assert "google-api-python-client" in doc["x-vendored"]["source"]


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
