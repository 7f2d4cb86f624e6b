"""Slack's interactive requests (a modal's submission, a button's click) as Bolt reads them, decoded in C.

Slack sends them form-encoded: ``payload=`` and the JSON of the whole view or message, every quote,
brace and colon percent-escaped. Bolt decodes that with ``urllib.parse.parse_qsl`` — pure Python, one
step per escape: ~290 µs for a 5 KB modal submission, about as much as the rest of Bolt's work on the
request. yarl (aiohttp's URL library) has the same decoding in C: ~50 µs. Only that one shape of
body takes this path; anything else is parsed by Bolt's own parser, here, once the signature is known
to be good (bot/slack/signature.py), so that a malformed body is answered 400 instead of raising inside
Bolt.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.request.internals import parse_body

try:  # yarl's decoder (C); qs=False decodes every %XX (qs=True would keep %26, %3D and %2B escaped)
    from yarl._quoting import _Unquoter

    _unquote: Any = _Unquoter()
except ImportError:  # pragma: no cover - a yarl without it: Bolt's own parsing
    _unquote = None

FORM = "application/x-www-form-urlencoded"


def payload_of(raw: str) -> dict[str, Any] | None:
    """The JSON of a body that is exactly ``payload=<form-encoded JSON>``, as ``parse_qsl`` would decode
    it (``+`` is a space, ``%2B`` a plus); None for any other body."""
    if _unquote is None or not raw.startswith("payload=") or "&" in raw:
        return None
    text = _unquote(raw[len("payload="):].replace("+", "%20"))
    if "%" in text:  # a literal "%", or an escape yarl leaves as it is (invalid UTF-8): Bolt's own parse
        return None
    decoded = json.loads(text)
    return decoded if isinstance(decoded, dict) else None


class MalformedBody(ValueError):
    """A signed body that is not what Slack sends (not UTF-8, not a JSON object where one belongs)."""


def body_text(raw: bytes, charset: str | None) -> str:
    """The body as text: Slack sends UTF-8, so a body that is not, or that names another charset, is
    malformed."""
    if charset is not None and charset.lower().replace("-", "") != "utf8":
        raise MalformedBody("a charset other than UTF-8")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedBody("a body that is not UTF-8") from None


def bolt_request(request: web.Request, raw: str) -> AsyncBoltRequest:
    """Bolt's request for ``raw`` (``request``'s body as text), its body parsed once here: the payload by
    ``payload_of``, anything else by Bolt's own parser. Raises MalformedBody when the body is not a JSON
    object (or a form of one). The request keeps its raw body, from which Bolt checks the signature again."""
    try:
        body = payload_of(raw) if request.content_type == FORM else None
        parsed = body if body is not None else parse_body(raw, request.content_type)
    except ValueError:  # json.JSONDecodeError included
        raise MalformedBody("a body that is not JSON where JSON belongs") from None
    if not isinstance(parsed, dict):
        raise MalformedBody("a body that is not a JSON object")
    # Given a dict, Bolt takes the body as parsed (its Socket Mode path); then the request is made an
    # HTTP one again, with the raw body its signature check reads.
    req = AsyncBoltRequest(body=parsed, query=request.query_string, headers=request.headers,  # type: ignore[arg-type]
                           mode="socket_mode")
    req.raw_body, req.mode = raw, "http"
    return req
