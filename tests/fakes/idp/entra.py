"""A strict, in-memory fake of Microsoft Entra ID: the v2.0 token endpoint and Microsoft Graph v1.0.

As documented: OIDC discovery at ``/{tenant}/v2.0/.well-known/openid-configuration``, client
credentials with a secret or a certificate-signed ``client_assertion``; Graph errors as
``{"error": {"code", "message", "innerError"}}``; ``@odata.nextLink`` paging; ``$ref`` membership
(400 "already exist", 404 when not a member); 429 with ``Retry-After``.

Permissions as Graph enforces them: an access token is a JWT whose ``roles`` claim holds the
application permissions consented when it was issued (``roles``); each Graph path needs one of its
documented permissions (``graph_permissions.py``), PIM for Groups assignments end at their expiry by the
fake's injected ``clock`` (``entra_pim.py``), and a group's members are returned with only
``@odata.type`` and ``id`` to an app that may not read users.

Every Graph request (query and JSON body) and successful answer is held to Microsoft Graph's v1.0
description, the subset vendored under tests/specs/graph (``tests/specs/graph_openapi.py``); what departs
from it is kept in ``spec_violations``, and the conformance suite fails on it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt
from aiohttp import web

from connectors.base import Target
from tests.fakes.idp.entra_pim import EntraPim
from tests.fakes.idp.entra_signins import EntraSignIns
from tests.fakes.idp.graph_permissions import USER_READERS, required
from tests.specs.graph_openapi import GraphSpec

SPEC = GraphSpec()

ROLES_KEY = web.RequestKey("roles", frozenset)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# What docs/deployment.md asks the operator to grant (the optional AuditLog.Read.All aside)
DEFAULT_ROLES = ("GroupMember.Read.All", "GroupMember.ReadWrite.All", "User.Read.All", "User.RevokeSessions.All")
_TOKEN_KEY = secrets.token_bytes(32)  # signs the fake's access tokens (Entra signs with its own keys)


def graph_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    inner = {"date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"), "request-id": str(uuid.uuid4()),
             "client-request-id": str(uuid.uuid4())}
    return web.json_response({"error": {"code": code, "message": message, "innerError": inner}},
                             status=status, headers=headers)


def _aad_error(status: int, error: str, code: int, description: str) -> web.Response:
    return web.json_response({
        "error": error, "error_description": f"AADSTS{code}: {description}", "error_codes": [code],
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ"), "trace_id": str(uuid.uuid4()),
        "correlation_id": str(uuid.uuid4()), "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }, status=status)


@dataclass
class _Faults:
    rate_limited: list[float] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)
    forbidden: int = 0
    missing: int = 0
    slow: list[float] = field(default_factory=list)


class FakeEntra:
    """An Entra tenant plus Graph on 127.0.0.1. Implements ``FaultControls``."""

    def __init__(self, *, tenant_id: str, client_id: str, client_secret: str | None = None,
                 certificate_public_pem: str | None = None, certificate_thumbprint: str | None = None,
                 page_size: int = 2, roles: tuple[str, ...] = DEFAULT_ROLES,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.certificate_public_pem = certificate_public_pem
        self.certificate_thumbprint = certificate_thumbprint
        self.page_size = page_size
        self.roles = set(roles)
        self.users: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, dict[str, Any]] = {}
        self.members: dict[str, list[str]] = {}
        self.revoked_sessions: list[str] = []
        self.spec_violations: list[str] = []  # departures from Graph's description (tests/specs/graph)
        self.check_spec = True  # off only where its CPU would distort a measurement
        self.clock = clock
        self.pim = EntraPim(self)  # PIM for Groups (tests/fakes/idp/entra_pim.py)
        self.sign_in_log = EntraSignIns()  # GET /v1.0/auditLogs/signIns (tests/fakes/idp/entra_signins.py)
        self.token_requests = 0
        self.auth_headers: list[str] = []
        self._api_calls = 0
        self.requests: list[tuple[str, str]] = []  # (method, path) of every API call, in order
        self._tokens: set[str] = set()
        self._seen_jti: set[str] = set()
        self._faults = _Faults()
        self._credentials_broken = False
        self.latency = 0.0  # seconds every Graph call takes before it is answered
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    @property
    def authority_url(self) -> str:
        return self.base_url

    @property
    def audience(self) -> str:
        return self.base_url  # the resource the ``<graph host>/.default`` scope names

    @property
    def graph_url(self) -> str:
        return f"{self.base_url}/v1.0"

    def add_user(self, mail: str, name: str = "Test User", *, guest: bool = False) -> str:
        """A member user, or with ``guest`` an external (B2B) user: ``userType`` Guest and a UPN with
        ``#EXT#``, as Entra writes them for an invited user."""
        uid = str(uuid.uuid4())
        upn = mail.replace("@", "_") + "#EXT#@tenant.onmicrosoft.com" if guest else mail.replace("@", "_upn@")
        self.users[uid] = {"@odata.type": "#microsoft.graph.user", "id": uid, "displayName": name,
                           "mail": mail, "userPrincipalName": upn, "userType": "Guest" if guest else "Member",
                           "accountEnabled": True}
        return uid

    def set_enabled(self, uid: str, enabled: bool) -> None:
        """``accountEnabled`` (Graph, user resource type: "true if the account is enabled; otherwise,
        false"), returned when ``$select`` names it, as every property outside the default set."""
        self.users[uid]["accountEnabled"] = enabled

    def add_group(self, name: str, members: list[str] | None = None) -> str:
        gid = str(uuid.uuid4())
        self.groups[gid] = {"@odata.type": "#microsoft.graph.group", "id": gid, "displayName": name}
        self.members[gid] = list(members or [])
        return gid

    # -- FaultControls -----------------------------------------------------------------------
    def rate_limit_next(self, retry_after: float, count: int = 1) -> None:
        self._faults.rate_limited.extend([retry_after] * count)

    def fail_next(self, status: int = 503, count: int = 1) -> None:
        self._faults.failures.extend([status] * count)

    def forbid_next(self, count: int = 1) -> None:
        self._faults.forbidden += count

    def not_found_next(self, count: int = 1) -> None:
        self._faults.missing += count

    def slow_next(self, seconds: float, count: int = 1) -> None:
        self._faults.slow.extend([seconds] * count)

    def break_credentials(self) -> None:
        self._credentials_broken = True
        self._tokens.clear()

    def is_member(self, target: Target, user_id: str) -> bool:
        return user_id in self.members.get(target.id, [])

    @property
    def api_calls(self) -> int:
        return self._api_calls

    # -- server ------------------------------------------------------------------------------
    async def start(self, ssl_context: ssl.SSLContext) -> str:
        app = web.Application(middlewares=[self._spec, self._gate])
        t = self.tenant_id
        app.router.add_get(f"/{t}/v2.0/.well-known/openid-configuration", self._discovery)
        app.router.add_post(f"/{t}/oauth2/v2.0/token", self._token)
        app.router.add_get("/v1.0/users", self._list_users)
        app.router.add_get("/v1.0/users/{uid}", self._get_user)
        app.router.add_get("/v1.0/users/{uid}/memberOf", self._member_of)
        app.router.add_post("/v1.0/users/{uid}/checkMemberGroups", self._check_member_groups)
        app.router.add_post("/v1.0/users/{uid}/revokeSignInSessions", self._revoke_sessions)
        app.router.add_get("/v1.0/groups", self._list_groups)
        app.router.add_get("/v1.0/groups/{gid}/members", self._group_members)
        app.router.add_post("/v1.0/groups/{gid}/members/$ref", self._add_member)
        app.router.add_delete("/v1.0/groups/{gid}/members/{uid}/$ref", self._remove_member)
        app.router.add_get("/v1.0/auditLogs/signIns", self._sign_ins)
        self.pim.install(app)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"https://127.0.0.1:{port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _spec(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not (self.check_spec and request.path.startswith("/v1.0/")):
            return await handler(request)  # type: ignore[no-any-return]
        sent: Any = None
        if request.body_exists:
            raw = await request.read()  # kept by aiohttp: the handler reads it again
            try:
                sent = json.loads(raw)
            except ValueError:
                self.spec_violations.append(f"{request.method} {request.path}: the request body is not JSON")
        response: web.StreamResponse = await handler(request)
        body = getattr(response, "body", None)
        answer = json.loads(body) if isinstance(body, bytes) and body else None
        self.spec_violations += SPEC.check(request.method, request.path, dict(request.query), response.status,
                                           answer, body=sent)
        return response

    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith("/v1.0/"):
            return await handler(request)  # type: ignore[no-any-return]
        self.pim.expire_due()  # Entra ends an assignment at its end on its own
        self._api_calls += 1
        if self.latency:
            await asyncio.sleep(self.latency)  # an IdP's round trip (bench/directory_scale.py)
        self.requests.append((request.method, request.path))
        header = request.headers.get("Authorization", "")
        self.auth_headers.append(header)
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer" or token not in self._tokens:
            return graph_error(401, "InvalidAuthenticationToken", "Access token validation failure.")
        roles = frozenset(jwt.decode(token, _TOKEN_KEY, algorithms=["HS256"], audience=self.audience)["roles"])
        request[ROLES_KEY] = roles
        faults = self._faults
        if faults.slow:
            await asyncio.sleep(faults.slow.pop(0))
        if faults.rate_limited:
            wait = faults.rate_limited.pop(0)
            return graph_error(429, "TooManyRequests", "Too many requests, please retry later.",
                               headers={"Retry-After": str(int(round(wait)))})
        if faults.failures:
            status = faults.failures.pop(0)
            code = "serviceNotAvailable" if status == 503 else "generalException"
            return graph_error(status, code, "The service is temporarily unavailable.")
        if faults.forbidden:
            faults.forbidden -= 1
            return self._denied()
        if faults.missing:
            faults.missing -= 1
            return self._not_found("unknown")
        if roles.isdisjoint(required(request.method, request.path.removeprefix("/v1.0"))):
            return self._denied()
        return await handler(request)  # type: ignore[no-any-return]

    @staticmethod
    def _denied() -> web.Response:
        return graph_error(403, "Authorization_RequestDenied",
                           "Insufficient privileges to complete the operation.")

    async def _sign_ins(self, request: web.Request) -> web.Response:
        return await self.sign_in_log.handle(self, request)

    @staticmethod
    def _not_found(ident: str) -> web.Response:
        return graph_error(404, "Request_ResourceNotFound", f"Resource '{ident}' does not exist or one of "
                           "its queried reference-property objects are not present.")

    async def _discovery(self, request: web.Request) -> web.Response:
        root = f"{self.base_url}/{self.tenant_id}"
        return web.json_response({
            "token_endpoint": f"{root}/oauth2/v2.0/token",
            "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
            "issuer": f"{root}/v2.0", "token_endpoint_auth_methods_supported":
                ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        })

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            return _aad_error(400, "unsupported_grant_type", 70003,
                              "The app requested an unsupported grant type.")
        if form.get("client_id") != self.client_id:
            return _aad_error(400, "unauthorized_client", 700016,
                              f"Application with identifier '{form.get('client_id')}' was not found.")
        if not str(form.get("scope", "")).endswith("/.default"):
            return _aad_error(400, "invalid_scope", 1002012, "The provided value for scope is not valid.")
        if not self._client_authenticated(form):
            return _aad_error(401, "invalid_client", 7000215, "Invalid client secret provided.")
        now = int(datetime.now(UTC).timestamp())
        token = jwt.encode({"aud": self.audience, "iss": f"https://sts.windows.net/{self.tenant_id}/",
                            "appid": self.client_id, "roles": sorted(self.roles), "iat": now, "nbf": now,
                            "exp": now + 3599, "uti": secrets.token_urlsafe(16)}, _TOKEN_KEY, algorithm="HS256")
        self._tokens.add(token)
        return web.json_response({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                                  "access_token": token})

    def _client_authenticated(self, form: Any) -> bool:
        if self._credentials_broken:
            return False
        if "client_secret" in form:
            return self.client_secret is not None and form["client_secret"] == self.client_secret
        if form.get("client_assertion_type") != ASSERTION_TYPE or self.certificate_public_pem is None:
            return False
        assertion = str(form.get("client_assertion", ""))
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(assertion, self.certificate_public_pem, algorithms=["RS256", "PS256"],
                                audience=f"{self.base_url}/{self.tenant_id}/oauth2/v2.0/token",
                                issuer=self.client_id, options={"require": ["exp", "jti", "sub"]})
        except jwt.PyJWTError:
            return False
        thumb = header.get("x5t") or header.get("x5t#S256") or ""
        thumbprint = base64.urlsafe_b64decode(thumb + "=" * (-len(thumb) % 4)).hex()
        fresh = claims["jti"] not in self._seen_jti
        self._seen_jti.add(claims["jti"])
        return fresh and claims["sub"] == self.client_id and thumbprint == self.certificate_thumbprint

    # -- Graph -------------------------------------------------------------------------------
    def _page(self, request: web.Request, items: list[dict[str, Any]]) -> web.Response:
        top = min(int(request.query.get("$top", 100)), self.page_size)
        start = int(request.query.get("$skiptoken", "0") or 0)
        select = [s for s in request.query.get("$select", "").split(",") if s]
        page = [{k: v for k, v in item.items() if not select or k in select or k == "@odata.type"}
                for item in items[start:start + top]]
        body: dict[str, Any] = {"@odata.context": f"{self.graph_url}/$metadata#directoryObjects",
                                "value": page}
        if start + top < len(items):
            body["@odata.nextLink"] = f"{self.base_url}{request.path}?$top={top}&$skiptoken={start + top}" + (
                f"&$select={','.join(select)}" if select else "")
        return web.json_response(body)

    async def _list_users(self, request: web.Request) -> web.Response:
        expr = request.query.get("$filter", "")
        clauses = re.findall(r"(mail|userPrincipalName) eq '((?:[^']|'')*)'", expr)
        if expr and not clauses:
            return graph_error(400, "Request_UnsupportedQuery", "Unsupported or invalid query filter clause.")
        wanted = [(attr, value.replace("''", "'").lower()) for attr, value in clauses]
        found = [u for u in self.users.values()
                 if not wanted or any((u.get(attr) or "").lower() == value for attr, value in wanted)]
        return self._page(request, found)

    async def _get_user(self, request: web.Request) -> web.Response:
        user = self.users.get(request.match_info["uid"])
        if user is None:
            return self._not_found(request.match_info["uid"])
        select = [f for f in request.query.get("$select", "").split(",") if f]
        return web.json_response({k: v for k, v in user.items() if not select or k in select or k == "id"})

    async def _member_of(self, request: web.Request) -> web.Response:
        uid = request.match_info["uid"]
        if uid not in self.users:
            return self._not_found(uid)
        return self._page(request, [g for gid, g in self.groups.items() if uid in self.members[gid]])

    async def _check_member_groups(self, request: web.Request) -> web.Response:
        """``POST /users/{id}/checkMemberGroups`` (Graph v1.0 "user: checkMemberGroups"): of ``groupIds``
        (at most 20, else 400), the ids of the groups the user is a member of. Graph's check is transitive;
        this fake's groups hold users only, so direct membership is all there is to check. Assumed: a
        malformed id fails the whole request with 400 (the page says the collection is evaluated as one)."""
        if request[ROLES_KEY].isdisjoint(USER_READERS):  # the user half of the documented permission pair
            return self._denied()
        uid = request.match_info["uid"]
        if uid not in self.users:
            return self._not_found(uid)
        body = await request.json()
        ids = body.get("groupIds") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not ids or len(ids) > 20 or not all(
                isinstance(i, str) and re.fullmatch(r"[0-9a-f-]{36}", i) for i in ids):
            return graph_error(400, "Request_BadRequest", "Invalid groupIds: 1 to 20 group object ids are required.")
        found = [i for i in ids if uid in self.members.get(i, [])]
        return web.json_response({"@odata.context": f"{self.graph_url}/$metadata#Collection(Edm.String)",
                                  "value": found})

    async def _revoke_sessions(self, request: web.Request) -> web.Response:
        uid = request.match_info["uid"]
        if uid not in self.users:
            return self._not_found(uid)
        self.revoked_sessions.append(uid)
        return web.json_response({"@odata.context": f"{self.graph_url}/$metadata#Edm.Boolean", "value": True})

    async def _list_groups(self, request: web.Request) -> web.Response:
        expr = request.query.get("$filter", "")
        match = re.fullmatch(r"displayName eq '((?:[^']|'')*)'", expr)
        if expr and not match:
            return graph_error(400, "Request_UnsupportedQuery", "Unsupported or invalid query filter clause.")
        name = match.group(1).replace("''", "'") if match else None
        found = [g for g in self.groups.values() if name is None or g["displayName"] == name]
        return self._page(request, found)

    async def _group_members(self, request: web.Request) -> web.Response:
        gid = request.match_info["gid"]
        if gid not in self.groups:
            return self._not_found(gid)
        users = [self.users[uid] for uid in self.members[gid]]
        if request[ROLES_KEY].isdisjoint(USER_READERS):  # limited information for inaccessible objects
            users = [{"@odata.type": u["@odata.type"], "id": u["id"]} for u in users]
        return self._page(request, users)

    async def _add_member(self, request: web.Request) -> web.Response:
        gid = request.match_info["gid"]
        if gid not in self.groups:
            return self._not_found(gid)
        try:
            ref = (await request.json())["@odata.id"]
        except (ValueError, KeyError, TypeError):
            return graph_error(400, "BadRequest", "Write requests are only supported on contained entities")
        match = re.fullmatch(re.escape(self.graph_url) + r"/directoryObjects/([0-9a-f-]{36})", ref)
        if not match:
            return graph_error(400, "Request_BadRequest", "Invalid object identifier.")
        uid = match.group(1)
        if uid not in self.users:
            return self._not_found(uid)
        if uid in self.members[gid]:
            return graph_error(400, "Request_BadRequest", "One or more added object references already "
                               "exist for the following modified properties: 'members'.")
        self.members[gid].append(uid)
        return web.Response(status=204)

    async def _remove_member(self, request: web.Request) -> web.Response:
        gid, uid = request.match_info["gid"], request.match_info["uid"]
        if gid not in self.groups or uid not in self.members[gid]:
            return self._not_found(uid)
        self.members[gid].remove(uid)
        return web.Response(status=204)
