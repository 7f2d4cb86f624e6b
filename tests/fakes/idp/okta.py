"""A strict, in-memory fake of the Okta management API (users, groups, sessions, OAuth token).

It follows Okta's documents, not our guesses: ``Authorization: SSWS <token>`` exactly (or a Bearer
token it issued from ``/oauth2/v1/token`` for a private-key JWT client assertion), the error object
``{errorCode, errorSummary, errorLink, errorId, errorCauses}``, cursor paging through
``Link: <...>; rel="next"``, and 429 with ``X-Rate-Limit-Limit/Remaining/Reset`` plus ``Date``.

A service app requires DPoP unless ``require_dpop=False``, as new API Services apps do by default
(okta_dpop.py): the token endpoint demands a proof and its nonce, issues ``token_type: DPoP`` bound
to the proof's key, and each API call must carry ``Authorization: DPoP <token>`` and a proof with
``ath``. With ``require_dpop=False`` the fake ignores a proof and issues a Bearer token (assumption:
what Okta does with a proof it does not require is not documented).
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

import jwt
from aiohttp import web

from connectors.base import Target
from tests.fakes.idp.okta_dpop import DPoPError, DPoPVerifier
from tests.fakes.idp.okta_limits import OktaRateLimit
from tests.fakes.idp.okta_logs import OktaSystemLog
from tests.specs.openapi import OKTA_MANAGEMENT, OpenApiSpec

SPEC = OpenApiSpec(OKTA_MANAGEMENT)

TOKEN_PATH = "/oauth2/v1/token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

_ERRORS = {
    401: ("E0000011", "Invalid token provided"),
    403: ("E0000006", "You do not have permission to perform the requested action"),
    404: ("E0000007", "Not found: Resource not found"),
    429: ("E0000047", "API call exceeded rate limit due to too many requests."),
}


def _okta_id(prefix: str) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(17))


def error_body(status: int, summary: str | None = None) -> dict[str, Any]:
    code, default = _ERRORS.get(status, ("E0000009", "Internal Server Error"))
    error_id = "oae" + secrets.token_hex(8)
    return {"errorCode": code, "errorSummary": summary or default, "errorLink": code,
            "errorId": error_id, "errorCauses": []}


@dataclass
class _Faults:
    rate_limited: list[float] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)
    forbidden: int = 0
    missing: int = 0
    slow: list[float] = field(default_factory=list)


class FakeOkta:
    """An Okta org on 127.0.0.1. Implements ``tests.connectors.conformance.FaultControls``."""

    def __init__(self, *, api_token: str = "00okta-test-token", page_size: int = 2,
                 client_id: str = "0oaclient", public_key_pem: str | None = None,
                 granted_scopes: tuple[str, ...] = ("okta.groups.manage", "okta.users.read"),
                 require_dpop: bool = True) -> None:
        self.api_token = api_token
        self.page_size = page_size
        self.client_id = client_id
        self.public_key_pem = public_key_pem
        self.granted_scopes = set(granted_scopes)
        self.users: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, dict[str, Any]] = {}
        self.members: dict[str, list[str]] = {}
        self.revoked_sessions: list[str] = []
        self.revoked_oauth_tokens: list[str] = []  # users whose sessions were ended with oauthTokens=true
        # Every management API request and successful answer, checked against Okta's OpenAPI description
        # (tests/specs/okta): what departs from it is kept here, and the conformance suite fails on it.
        self.spec_violations: list[str] = []
        self.check_spec = True  # off only where its CPU would distort a measurement (bench/okta_idp.py)
        self.auth_headers: list[str] = []
        self.token_requests = 0
        self._api_calls = 0
        self.requests: list[tuple[str, str]] = []  # (method, path) of every API call, in order
        self._bearer: dict[str, set[str]] = {}
        self.require_dpop = require_dpop
        self.dpop = DPoPVerifier()
        self._dpop_tokens: dict[str, tuple[set[str], str]] = {}  # token → (scopes, key thumbprint)
        self._seen_jti: set[str] = set()
        self._faults = _Faults()
        self._credentials_broken = False
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.system_log = OktaSystemLog()  # GET /api/v1/logs (tests/fakes/idp/okta_logs.py)
        self.rate_limit: OktaRateLimit | None = None  # a standing budget (``limit_rate``)
        self.latency = 0.0  # seconds every API call takes before it is answered
        self.outage_status: int | None = None  # every API call answered with this status (``go_down``)

    # -- directory ---------------------------------------------------------------------------
    def add_user(self, email: str, first: str = "Test", last: str = "User") -> str:
        uid = _okta_id("00u")
        now = "2024-01-01T00:00:00.000Z"
        self.users[uid] = {
            "id": uid, "status": "ACTIVE", "created": now, "activated": now, "statusChanged": now,
            "lastLogin": None, "lastUpdated": now, "passwordChanged": None,
            "type": {"id": "oty1"},
            "profile": {"firstName": first, "lastName": last, "mobilePhone": None, "secondEmail": None,
                        "login": email, "email": email},
            "credentials": {"provider": {"type": "OKTA", "name": "OKTA"}},
            "_links": {"self": {"href": f"{self.base_url}/api/v1/users/{uid}"}},
        }
        return uid

    def set_status(self, uid: str, status: str) -> None:
        """A user status of Okta's lifecycle (okta.models.user_status: ACTIVE, SUSPENDED, DEPROVISIONED, ...).
        ``search`` still finds the user in any status, as Okta's List Users documents."""
        self.users[uid]["status"] = status

    def add_group(self, name: str, members: list[str] | None = None) -> str:
        gid = _okta_id("00g")
        now = "2024-01-01T00:00:00.000Z"
        self.groups[gid] = {
            "id": gid, "created": now, "lastUpdated": now, "lastMembershipUpdated": now,
            "objectClass": ["okta:user_group"], "type": "OKTA_GROUP",
            "profile": {"name": name, "description": ""},
            "_links": {"users": {"href": f"{self.base_url}/api/v1/groups/{gid}/users"}},
        }
        self.members[gid] = list(members or [])
        return gid

    # -- FaultControls -----------------------------------------------------------------------
    def rate_limit_next(self, retry_after: float, count: int = 1) -> None:
        self._faults.rate_limited.extend([retry_after] * count)

    def limit_rate(self, limit: int, window: int = 60, clock: Callable[[], float] = time.time) -> OktaRateLimit:
        """From now on the org admits ``limit`` API calls per ``window`` seconds, as Okta does: every
        response carries ``X-Rate-Limit-*`` headers, a call over the budget gets 429 (okta_limits.py)."""
        self.rate_limit = OktaRateLimit(limit, window, clock)
        return self.rate_limit

    def fail_next(self, status: int = 503, count: int = 1) -> None:
        self._faults.failures.extend([status] * count)

    def forbid_next(self, count: int = 1) -> None:
        self._faults.forbidden += count

    def not_found_next(self, count: int = 1) -> None:
        self._faults.missing += count

    def slow_next(self, seconds: float, count: int = 1) -> None:
        self._faults.slow.extend([seconds] * count)

    def go_down(self, status: int = 503) -> None:
        """An outage: every API call is answered ``status`` (Okta's error body) until ``come_back``."""
        self.outage_status = status

    def come_back(self) -> None:
        self.outage_status = None

    def break_credentials(self) -> None:
        self._credentials_broken = True

    def is_member(self, target: Target, user_id: str) -> bool:
        return user_id in self.members.get(target.id, [])

    @property
    def api_calls(self) -> int:
        return self._api_calls

    # -- server ------------------------------------------------------------------------------
    async def start(self, ssl_context: ssl.SSLContext | None = None) -> str:
        app = web.Application(middlewares=[self._spec, self._gate])
        app.router.add_post(TOKEN_PATH, self._token)
        app.router.add_get("/api/v1/users", self._list_users)
        app.router.add_get("/api/v1/users/{uid}", self._get_user)
        app.router.add_get("/api/v1/users/{uid}/groups", self._user_groups)
        app.router.add_delete("/api/v1/users/{uid}/sessions", self._revoke_sessions)
        app.router.add_get("/api/v1/groups", self._list_groups)
        app.router.add_get("/api/v1/groups/{gid}", self._get_group)
        app.router.add_get("/api/v1/groups/{gid}/users", self._group_users)
        app.router.add_put("/api/v1/groups/{gid}/users/{uid}", self._assign)
        app.router.add_delete("/api/v1/groups/{gid}/users/{uid}", self._unassign)
        app.router.add_get("/api/v1/logs", self._logs)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _error(self, status: int, summary: str | None = None,
               headers: dict[str, str] | None = None) -> web.Response:
        return web.json_response(error_body(status, summary), status=status, headers=headers)

    @web.middleware
    async def _spec(self, request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        if self.check_spec and request.path.startswith("/api/v1/"):
            body = getattr(response, "body", None)
            answer = json.loads(body) if isinstance(body, bytes) and body else None
            self.spec_violations += SPEC.check(request.method, request.path, dict(request.query), response.status,
                                               answer)
        return response

    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == TOKEN_PATH:
            self.token_requests += 1
            return await handler(request)  # type: ignore[no-any-return]
        self._api_calls += 1
        self.requests.append((request.method, request.path))
        header = request.headers.get("Authorization", "")
        self.auth_headers.append(header)
        scopes = self._authenticate(header, request)
        if scopes is None:
            return self._error(401)
        if self.latency:
            await asyncio.sleep(self.latency)  # an IdP's round trip (bench/directory_scale.py)
        if self.outage_status is not None:
            return self._error(self.outage_status)
        faults = self._faults
        if faults.slow:
            await asyncio.sleep(faults.slow.pop(0))
        if faults.rate_limited:
            wait = faults.rate_limited.pop(0)
            now = int(time.time())
            return self._error(429, headers={
                "X-Rate-Limit-Limit": "600", "X-Rate-Limit-Remaining": "0",
                "X-Rate-Limit-Reset": str(now + int(round(wait))), "Date": formatdate(now, usegmt=True)})
        limit_headers: dict[str, str] = {}
        if self.rate_limit is not None:
            allowed, limit_headers = self.rate_limit.admit()
            if not allowed:
                return self._error(429, headers=limit_headers)
        if faults.failures:
            return self._error(faults.failures.pop(0))
        if faults.forbidden:
            faults.forbidden -= 1
            return self._error(403)
        if faults.missing:
            faults.missing -= 1
            return self._error(404)
        needed = _required_scope(request)
        if scopes and needed not in scopes and not (needed.endswith(".read")
                                                    and needed.replace(".read", ".manage") in scopes):
            return self._error(403, headers={
                "WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{needed}"'})
        response: web.StreamResponse = await handler(request)
        response.headers.update(limit_headers)
        return response

    def _authenticate(self, header: str, request: web.Request) -> set[str] | None:
        """The granted scopes (empty for an API token), or None when the credentials are refused."""
        if self._credentials_broken:
            return None
        if header == f"SSWS {self.api_token}":
            return set()
        scheme, _, token = header.partition(" ")
        if scheme == "Bearer" and token in self._bearer:
            return self._bearer[token]
        if scheme == "DPoP" and token in self._dpop_tokens:
            scopes, bound = self._dpop_tokens[token]
            try:
                key = self.dpop.verify(request.headers.get("DPoP"), method=request.method, nonce_required=False,
                                       url=self.base_url + request.path, access_token=token)
            except DPoPError:
                return None
            return scopes if key == bound else None
        return None

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()

        def oauth_error(status: int, error: str, description: str) -> web.Response:
            return web.json_response({"error": error, "error_description": description}, status=status)

        if form.get("grant_type") != "client_credentials":
            return oauth_error(400, "unsupported_grant_type", "The grant type is not supported.")
        key: str | None = None
        if self.require_dpop:  # the proof is checked before the client assertion is spent
            try:
                key = self.dpop.verify(request.headers.get("DPoP"), method="POST", nonce_required=True,
                                       url=self.base_url + TOKEN_PATH)
            except DPoPError as exc:
                answer = oauth_error(400, exc.error, str(exc))
                if exc.error == "use_dpop_nonce":
                    answer.headers["DPoP-Nonce"] = self.dpop.nonce
                return answer
        if form.get("client_assertion_type") != ASSERTION_TYPE or self.public_key_pem is None:
            return oauth_error(401, "invalid_client", "Client authentication failed.")
        try:
            claims = jwt.decode(str(form.get("client_assertion", "")), self.public_key_pem,
                                algorithms=["RS256"], audience=self.base_url + TOKEN_PATH,
                                issuer=self.client_id, options={"require": ["exp", "iat", "jti", "sub"]})
        except jwt.PyJWTError:
            return oauth_error(401, "invalid_client", "The client_assertion signature is invalid.")
        if self._credentials_broken or claims["sub"] != self.client_id or claims["jti"] in self._seen_jti:
            return oauth_error(401, "invalid_client", "The client_assertion token is invalid.")
        self._seen_jti.add(claims["jti"])
        requested = set(str(form.get("scope", "")).split())
        if not requested or not requested <= self.granted_scopes:
            return oauth_error(400, "invalid_scope", "One or more scopes are not configured for the app.")
        token = secrets.token_urlsafe(24)
        if key is not None:
            self._dpop_tokens[token] = (requested, key)
        else:
            self._bearer[token] = requested
        return web.json_response({"token_type": "DPoP" if key else "Bearer", "expires_in": 3600,
                                  "access_token": token, "scope": " ".join(sorted(requested))})

    # -- API ---------------------------------------------------------------------------------
    def _page(self, request: web.Request, items: list[dict[str, Any]]) -> web.Response:
        limit = min(int(request.query.get("limit", self.page_size)), self.page_size)
        after = request.query.get("after")
        start = 0
        if after:
            ids = [item["id"] for item in items]
            if after not in ids:
                return self._error(400, "Invalid after cursor")
            start = ids.index(after) + 1
        page = items[start:start + limit]
        base = f"{self.base_url}{request.path}"
        links = [f'<{base}?limit={limit}>; rel="self"']
        if start + limit < len(items):
            links.append(f'<{base}?after={page[-1]["id"]}&limit={limit}>; rel="next"')
        return web.json_response(page, headers={"Link": ", ".join(links)})

    async def _logs(self, request: web.Request) -> web.Response:
        return await self.system_log.handle(self, request)

    async def _list_users(self, request: web.Request) -> web.Response:
        expr = request.query.get("search") or request.query.get("filter") or ""
        clauses = re.findall(r'(profile\.\w+) eq "([^"]*)"', expr)
        if expr and not clauses:
            return self._error(400, "Invalid search criteria.")
        found = [u for u in self.users.values()
                 if not clauses or any(str(u["profile"].get(attr.split(".")[1], "")).lower() == value.lower()
                                       for attr, value in clauses)]
        return self._page(request, found)

    async def _get_user(self, request: web.Request) -> web.Response:
        key = request.match_info["uid"]
        for user in self.users.values():
            if key == user["id"] or key.lower() == user["profile"]["login"].lower():
                return web.json_response(user)
        return self._error(404, f"Not found: Resource not found: {key} (User)")

    async def _user_groups(self, request: web.Request) -> web.Response:
        uid = request.match_info["uid"]
        if uid not in self.users:
            return self._error(404, f"Not found: Resource not found: {uid} (User)")
        return web.json_response([g for gid, g in self.groups.items() if uid in self.members[gid]])

    async def _revoke_sessions(self, request: web.Request) -> web.Response:
        uid = request.match_info["uid"]
        if uid not in self.users:
            return self._error(404, f"Not found: Resource not found: {uid} (User)")
        flags = {k: request.query.get(k, "false") for k in ("oauthTokens", "forgetDevices")}
        if any(v not in ("true", "false") for v in flags.values()):
            return self._error(400, "Invalid boolean query parameter.")
        self.revoked_sessions.append(uid)
        if flags["oauthTokens"] == "true":  # also the OIDC / OAuth refresh and access tokens issued to the user
            self.revoked_oauth_tokens.append(uid)
        return web.Response(status=204)

    async def _list_groups(self, request: web.Request) -> web.Response:
        expr = request.query.get("search", "")
        match = re.fullmatch(r'profile\.name eq "([^"]*)"', expr)
        if expr and not match:
            return self._error(400, "Invalid search criteria.")
        found = [g for g in self.groups.values() if not match or g["profile"]["name"] == match.group(1)]
        expand = request.query.get("expand")
        if expand not in (None, "stats", "app"):
            return self._error(400, "Invalid expand value.")
        if expand == "stats":  # documented: _embedded.stats.usersCount (and appsCount, ...)
            found = [g | {"_embedded": {"stats": {"usersCount": len(self.members[g["id"]]), "appsCount": 0,
                                                  "groupPushMappingsCount": 0, "hasAdminPrivilege": False}}}
                     for g in found]
        return self._page(request, found)

    async def _get_group(self, request: web.Request) -> web.Response:
        gid = request.match_info["gid"]
        if gid not in self.groups:
            return self._error(404, f"Not found: Resource not found: {gid} (UserGroup)")
        return web.json_response(self.groups[gid])

    async def _group_users(self, request: web.Request) -> web.Response:
        gid = request.match_info["gid"]
        if gid not in self.groups:
            return self._error(404, f"Not found: Resource not found: {gid} (UserGroup)")
        return self._page(request, [self.users[uid] for uid in self.members[gid]])

    def _membership_error(self, gid: str, uid: str) -> web.Response | None:
        if gid not in self.groups:
            return self._error(404, f"Not found: Resource not found: {gid} (UserGroup)")
        if uid not in self.users:
            return self._error(404, f"Not found: Resource not found: {uid} (User)")
        return None

    async def _assign(self, request: web.Request) -> web.Response:
        gid, uid = request.match_info["gid"], request.match_info["uid"]
        if (problem := self._membership_error(gid, uid)) is not None:
            return problem
        if uid not in self.members[gid]:
            self.members[gid].append(uid)
        return web.Response(status=204)

    async def _unassign(self, request: web.Request) -> web.Response:
        gid, uid = request.match_info["gid"], request.match_info["uid"]
        if (problem := self._membership_error(gid, uid)) is not None:
            return problem
        if uid in self.members[gid]:
            self.members[gid].remove(uid)
        return web.Response(status=204)


def _required_scope(request: web.Request) -> str:
    if request.path == "/api/v1/logs":
        return "okta.logs.read"
    if request.path.endswith("/sessions"):
        return "okta.users.manage"
    if request.path.startswith("/api/v1/groups"):
        return "okta.groups.read" if request.method == "GET" else "okta.groups.manage"
    return "okta.users.read"
