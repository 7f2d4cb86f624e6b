"""The Jira webhook's signature check (bot/webhooks/jira.py): HMAC-SHA256 of the raw body, ``sha256=<hex>``."""

from __future__ import annotations

import hashlib
import hmac

from bot.webhooks.jira import issue_key, signature_refusal

SECRET = b"s3cret"
BODY = b'{"webhookEvent":"jira:issue_updated","issue":{"key":"OPS-1"}}'
GOOD = "sha256=" + hmac.new(SECRET, BODY, hashlib.sha256).hexdigest()


def test_a_body_signed_with_the_secret_passes() -> None:
    assert signature_refusal(SECRET, {"X-Hub-Signature": GOOD}, BODY) is None
    assert signature_refusal(SECRET, {"X-Hub-Signature": GOOD.upper().replace("SHA256=", "sha256=")}, BODY) is None


def test_anything_else_is_refused_with_a_reason_that_quotes_nothing() -> None:
    cases = [{}, {"X-Hub-Signature": ""}, {"X-Hub-Signature": GOOD.replace("sha256", "sha1")},
             {"X-Hub-Signature": GOOD[:-2] + "00"}, {"X-Hub-Signature": "sha256=zz\u00e9"},
             {"X-Hub-Signature": "sha256=" + hmac.new(b"other", BODY, hashlib.sha256).hexdigest()}]
    for headers in cases:
        reason = signature_refusal(SECRET, headers, BODY)
        assert reason is not None and "s3cret" not in reason and GOOD[7:] not in reason
    assert signature_refusal(SECRET, {"X-Hub-Signature": GOOD}, BODY + b" ") is not None  # the raw bytes


def test_the_issue_key_is_all_that_is_read_from_the_body() -> None:
    assert issue_key(BODY) == "OPS-1"
    for raw in (b"", b"[]", b'{"issue": "OPS-1"}', b'{"issue": {"key": 5}}', b"\xff\xfe", b"{"):
        assert issue_key(raw) is None
