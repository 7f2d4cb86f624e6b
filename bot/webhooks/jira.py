"""``POST /jira/webhook``: a Jira Cloud webhook says an issue changed; jitbot asks Jira about it now.

Jira Cloud signs *admin* webhooks (System > WebHooks, or ``POST /rest/webhooks/1.0/webhook``) that are
registered with a secret: the header ``X-Hub-Signature: sha256=<hex>`` carries the HMAC-SHA256 of the raw
request body keyed with that secret (the WebSub ``method=signature`` form). Source:
https://developer.atlassian.com/cloud/jira/platform/webhooks/#secure-admin-webhooks.
Webhooks that Connect or OAuth 2.0 apps register through ``POST /rest/api/3/webhook`` ("dynamic"
webhooks) are not signed this way: they carry a bearer JWT signed with the app's client secret
(https://developer.atlassian.com/cloud/jira/platform/webhooks/#webhooks-authentication-for-oauth-2-0-apps),
so this route does not accept them. jitbot is no Connect or OAuth app; it needs none of that.
Assumptions (marked): ``sha256`` is the only method Jira sends (any other is refused); the hex digest is
lowercase (compared case-insensitively). Secondary sources agreeing on the header and the HMAC
(Hookdeck's and Trigger.dev's Jira guides) were read; one of them says dynamic webhooks are signed with a
secret too, which Atlassian's page does not say — whichever is true, an unsigned request is refused.

Order, and why:
1. the signature is checked on the raw bytes, before any of it is decoded (constant-time compare); a
   request without a valid one is answered 401 and one warning line (no body, no header, no secret);
2. the body is read only for the issue key (``issue.key``). Nothing else in it is trusted — not the
   status, not the project: the webhook is a hint to check now. The verdict is the REST API's
   (bot/services/background/ticket_watch.py ``check_now``), and revocation goes through the watch's audited path.
A replayed webhook therefore only repeats a check; an issue key no active ``end_with_ticket`` grant ends
with costs nothing (no Jira call); a key in another project is such a key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from bot.services.background.ticket_watch import TicketWatch
from bot.services.runtime import Runtime

log = logging.getLogger(__name__)

PATH = "/jira/webhook"
HEADER = "X-Hub-Signature"
MAX_BODY = 1 << 20  # an issue event with its changelog is a few kilobytes; more is not Jira's


def signature_refusal(secret: bytes, headers: Mapping[str, str], raw: bytes) -> str | None:
    """Why the request is not signed by Jira with ``secret`` (a reason without content), or None."""
    given = headers.get(HEADER)
    if not given:
        return f"no {HEADER} header"
    method, _, digest = given.partition("=")
    if method.strip().lower() != "sha256":
        return f"{HEADER} method is not sha256"
    expected = hmac.new(secret, raw, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), digest.strip().lower().encode("ascii", "replace")):
        return "the signature does not match"
    return None


def issue_key(raw: bytes) -> str | None:
    """The issue key the (verified) body names, or None."""
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):  # nested past the parser's depth
        return None
    issue = payload.get("issue") if isinstance(payload, dict) else None
    key = issue.get("key") if isinstance(issue, dict) else None
    return key if isinstance(key, str) else None


def jira_webhook_handler(rt: Runtime, secret: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    key_bytes = secret.encode()

    async def jira_webhook(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY:
            log.warning("refused a Jira webhook from %s: body over %d bytes", request.remote, MAX_BODY)
            return web.Response(status=413)
        try:
            raw = await request.read()
        except RequestPayloadError as exc:  # a body that cannot be read (a broken Content-Encoding, cut off)
            log.warning("refused a Jira webhook from %s: unreadable body (%s)", request.remote, type(exc).__name__)
            return web.Response(status=400)
        reason = signature_refusal(key_bytes, request.headers, raw)
        if reason is not None:
            log.warning("refused a Jira webhook from %s: %s", request.remote, reason)
            return web.Response(status=401)
        key = issue_key(raw)
        if key is None:  # signed, but no issue in it (another event type): nothing to check
            return web.Response(status=204)
        try:
            ended = await TicketWatch(rt).check_now(key)
        except Exception as exc:  # the database, most likely: Jira retries a 5xx, and the poll still runs
            log.warning("Jira webhook: %s could not be checked now (%s); the next poll will",
                        key[:64], type(exc).__name__)
            return web.Response(status=503)
        if ended:
            log.info("Jira webhook: %s checked, %d grant(s) ending with it", key[:64], ended)
        return web.Response(status=204)

    return jira_webhook


def add_routes(app: web.Application, rt: Runtime, secret: str | None) -> None:
    """``POST /jira/webhook``, only when a secret is configured (``JIRA_WEBHOOK_SECRET``)."""
    if secret:
        app.router.add_post(PATH, jira_webhook_handler(rt, secret))
