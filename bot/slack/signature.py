"""Slack's request signature, checked on the raw bytes before anything else in the request is read.

Slack signs ``v0:<timestamp>:<raw body>`` with the app's signing secret (HMAC-SHA256, hex) and sends the
result as ``X-Slack-Signature: v0=<hex>`` with ``X-Slack-Request-Timestamp`` (Unix seconds); a request
more than five minutes away from now is to be refused as a possible replay
(https://docs.slack.dev/authentication/verifying-requests-from-slack/). Bolt checks the same, but only
after it has decoded and parsed the body, so garbage that was never signed reached its parser and its
error handler. Here the headers must have exactly the documented shape (ASCII digits; ``v0=`` and 64 hex
digits): Python's ``int()`` would also take ``" 1"``, ``"1_000"`` or Arabic-Indic digits.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping

MAX_SKEW_S = 5 * 60
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")


def refusal(secret: bytes, headers: Mapping[str, str], body: bytes, *, now: float) -> str | None:
    """Why this request is not Slack's (a short reason for the log, no request content), or None when its
    signature and timestamp are valid."""
    timestamp = headers.get("X-Slack-Request-Timestamp")
    signature = headers.get("X-Slack-Signature")
    if timestamp is None or signature is None:
        return "no signature headers"
    if not _TIMESTAMP.fullmatch(timestamp):
        return "a timestamp that is not Unix seconds"
    if abs(now - int(timestamp)) > MAX_SKEW_S:
        return "a timestamp more than five minutes away"
    if not _SIGNATURE.fullmatch(signature):
        return "a signature that is not v0=<hex>"
    expected = hmac.new(secret, b"v0:" + timestamp.encode("ascii") + b":" + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest("v0=" + expected, signature):
        return "a wrong signature"
    return None
