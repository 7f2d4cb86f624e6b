"""A strict in-memory fake of Google's OAuth token endpoint and the Admin SDK Directory API.

Token endpoint (``POST /token``): RFC 7523 ``jwt-bearer`` grant; the assertion's RS256 signature is
verified with the service account's public key, and ``iss``, ``sub``, ``aud``, ``exp`` and ``scope``
are checked. Error bodies follow Google's OAuth (``{"error", "error_description"}``) and API
(``{"error": {"code", "message", "errors": [{"message", "domain", "reason"}], "status"}}``) formats.
Pages hold ``page_size`` members so that paging is exercised.

Groups nest (the discovery document ``admin.directory_v1``, vendored under tests/specs/google): a
group's members are users and groups. ``members.list`` lists direct members, and with
``includeDerivedMembership=true`` also the users of nested groups (each once); ``members.hasMember``
answers direct or nested; ``members.delete`` removes a direct membership only (404 otherwise).
The Cloud Identity Groups API methods of the expiry backstop, and the fake's own expiry of members (its
injected ``clock``), are in tests/fakes/idp/google_cloud_identity.py.
Assumption (not documented): a derived listing keeps the nested group itself as a member, and lists
direct members first.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import secrets
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import jwt
from aiohttp import web

from connectors.base import Target
from tests.fakes.idp.google_cloud_identity import CI, CloudIdentity
from tests.specs.discovery import GOOGLE_CLOUD_IDENTITY, GOOGLE_DIRECTORY, DiscoverySpec

SPEC = DiscoverySpec(GOOGLE_DIRECTORY)
CI_SPEC = DiscoverySpec(GOOGLE_CLOUD_IDENTITY)

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SCOPE_USER_READ = "https://www.googleapis.com/auth/admin.directory.user.readonly"
SCOPE_USER = "https://www.googleapis.com/auth/admin.directory.user"
SCOPE_GROUP_MEMBER = "https://www.googleapis.com/auth/admin.directory.group.member"
SCOPE_GROUP = "https://www.googleapis.com/auth/admin.directory.group"
SCOPE_USER_SECURITY = "https://www.googleapis.com/auth/admin.directory.user.security"
API = "/admin/directory/v1"
SCOPES_KEY = web.RequestKey("scopes", frozenset)

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def api_error(
    code: int, message: str, reason: str, domain: str = "global", headers: dict[str, str] | None = None
) -> web.Response:
    body = {
        "error": {
            "code": code,
            "message": message,
            "errors": [{"message": message, "domain": domain, "reason": reason}],
            "status": STATUS_NAMES.get(code, "UNKNOWN"),
        }
    }
    return web.json_response(body, status=code, headers=headers)


def oauth_error(status: int, error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status)


class FakeGoogleWorkspace:
    """The fake server and its switches (``tests.connectors.conformance.FaultControls``)."""

    def __init__(
        self,
        *,
        public_key_pem: bytes,
        client_email: str,
        subject: str,
        key_id: str = "",
        page_size: int = 2,
        token_lifetime: int = 3599,
        authorized_scopes: tuple[str, ...] = (SCOPE_USER_READ, SCOPE_GROUP_MEMBER, SCOPE_USER_SECURITY),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        expiry_licensed: bool = True,
    ) -> None:
        self.public_key_pem = public_key_pem
        self.client_email = client_email
        self.subject = subject
        self.key_id = key_id
        self.page_size = page_size
        self.token_lifetime = token_lifetime
        self.authorized_scopes = set(authorized_scopes)
        self.users: dict[str, dict[str, Any]] = {}  # id → user resource
        self.groups: dict[str, dict[str, Any]] = {}  # email → {"id", "email", "members": set of user ids}
        self.tokens: dict[str, tuple[frozenset[str], float]] = {}  # access token → (scopes, expiry)
        self.token_requests = 0
        self.assertions: list[dict[str, Any]] = []  # verified claims, for tests
        self.signed_out: list[str] = []
        self.clock = clock  # the fake ends memberships whose expiry this clock has passed
        self.expiry_licensed = expiry_licensed  # the edition has membership expiry (Cloud Identity)
        self.expiries: dict[tuple[str, str], datetime] = {}  # (group email, user id) → expiry
        self.cloud_identity = CloudIdentity(self)
        # Every request to the Directory API and every successful answer, checked against the discovery
        # document (tests/specs/google): what departs from it is kept here, and the suite fails on it.
        self.spec_violations: list[str] = []
        self._faults: deque[tuple[str, float, int]] = deque()  # (kind, value, status)
        self._api_calls = 0
        self._credentials_broken = False
        self._ids = itertools.count(100000000000000000001)
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- directory content ---------------------------------------------------------------------

    def add_user(self, email: str, name: str = "") -> str:
        uid = str(next(self._ids))
        self.users[uid] = {
            "kind": "admin#directory#user",
            "id": uid,
            "primaryEmail": email.lower(),
            "name": {"fullName": name or email},
            "isAdmin": email.lower() == self.subject,
            "suspended": False,
        }
        return uid

    def suspend(self, uid: str) -> None:
        """A suspended user (the Directory API's User ``suspended``; members.list says ``status`` SUSPENDED)."""
        self.users[uid]["suspended"] = True

    def add_group(self, email: str, members: list[str] = ()) -> str:  # type: ignore[assignment]
        """A group; ``members`` are user ids and group ids (a nested group)."""
        gid = format(next(self._ids), "x")
        self.groups[email.lower()] = {"id": gid, "email": email.lower(), "members": set(members)}
        return gid

    def _nested_users(self, group: dict[str, Any], seen: frozenset[str] = frozenset()) -> set[str]:
        """The users holding ``group`` directly or through nested groups."""
        users = {m for m in group["members"] if m in self.users}
        for m in group["members"] - users:
            inner = self._group(m)
            if inner is not None and inner["id"] not in seen:
                users |= self._nested_users(inner, seen | {group["id"]})
        return users

    def holds(self, target: Target, user_id: str) -> bool:
        """Whether the user holds the group at all (directly or nested), as hasMember answers."""
        group = self._group(target.id)
        return group is not None and user_id in self._nested_users(group)

    def users_by_email(self) -> dict[str, dict[str, Any]]:
        return {u["primaryEmail"]: u for u in self.users.values()}

    def expire_due(self) -> list[tuple[str, str]]:
        """End the memberships whose expiry the fake's clock has passed; (group email, user id) of each."""
        return self.cloud_identity.expire_due()

    def _user(self, key: str) -> dict[str, Any] | None:
        key = key.lower()
        return self.users.get(key) or next((u for u in self.users.values() if u["primaryEmail"] == key), None)

    def _group(self, key: str) -> dict[str, Any] | None:
        key = key.lower()
        return self.groups.get(key) or next((g for g in self.groups.values() if g["id"] == key), None)

    # -- FaultControls ----------------------------------------------------------------------------

    def rate_limit_next(self, retry_after: float, count: int = 1) -> None:
        """429 ``rateLimitExceeded`` with ``Retry-After``."""
        self._faults.extend([("429", retry_after, 429)] * count)

    def user_rate_limit_next(self, count: int = 1) -> None:
        """403 ``userRateLimitExceeded``, no ``Retry-After`` (the documented Directory API quota error)."""
        self._faults.extend([("403quota", 0.0, 403)] * count)

    def fail_next(self, status: int = 503, count: int = 1) -> None:
        self._faults.extend([("fail", 0.0, status)] * count)

    def forbid_next(self, count: int = 1) -> None:
        self._faults.extend([("forbid", 0.0, 403)] * count)

    def slow_next(self, seconds: float, count: int = 1) -> None:
        self._faults.extend([("slow", seconds, 200)] * count)

    def break_credentials(self) -> None:
        self._credentials_broken = True
        self.tokens.clear()

    def is_member(self, target: Target, user_id: str) -> bool:
        """A direct membership (the one jitbot grants and removes)."""
        group = self._group(target.id)
        return group is not None and user_id in group["members"]

    @property
    def api_calls(self) -> int:
        return self._api_calls

    # -- server -----------------------------------------------------------------------------------

    async def start(self) -> FakeGoogleWorkspace:
        app = web.Application(middlewares=[self._spec, self._middleware])
        app.router.add_post("/token", self._token)
        app.router.add_get(API + "/users/{key}", self._users_get)
        app.router.add_post(API + "/users/{key}/signOut", self._sign_out)
        app.router.add_get(API + "/groups/{group}/members", self._members_list)
        app.router.add_post(API + "/groups/{group}/members", self._members_insert)
        app.router.add_delete(API + "/groups/{group}/members/{member}", self._members_delete)
        app.router.add_get(API + "/groups/{group}/hasMember/{member}", self._has_member)
        self.cloud_identity.install(app)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def token_uri(self) -> str:
        return self.url + "/token"

    @web.middleware
    async def _spec(self, request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        if request.path.startswith((API, CI)):
            raw = await request.read()
            body = json.loads(raw) if raw else None
            answer = getattr(response, "body", None)
            answer_json = json.loads(answer) if isinstance(answer, bytes) and answer else None
            spec = SPEC if request.path.startswith(API) else CI_SPEC
            problems = spec.check(request.method, request.path, dict(request.query), body,
                                  response.status, answer_json)
            self.spec_violations += problems
        return response

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith((API, CI)):
            return await handler(request)  # type: ignore[no-any-return]
        self.expire_due()  # Google ends an expired membership on its own, whether anyone calls or not
        self._api_calls += 1
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        granted = self.tokens.get(token) if scheme == "Bearer" else None
        if granted is None or granted[1] < time.time():
            return api_error(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential.",
                "authError",
            )
        request[SCOPES_KEY] = granted[0]
        if self._faults:
            kind, value, status = self._faults.popleft()
            if kind == "429":
                return api_error(
                    429,
                    "Rate Limit Exceeded",
                    "rateLimitExceeded",
                    "usageLimits",
                    headers={"Retry-After": str(int(value))},
                )
            if kind == "403quota":
                return api_error(403, "User Rate Limit Exceeded", "userRateLimitExceeded", "usageLimits")
            if kind == "forbid":
                return api_error(403, "Not Authorized to access this resource/api", "forbidden")
            if kind == "fail":
                message = (
                    "Internal error encountered."
                    if status == 500
                    else "The service is currently unavailable."
                )
                return api_error(status, message, "backendError")
            await asyncio.sleep(value)
        return await handler(request)  # type: ignore[no-any-return]

    @staticmethod
    def _needs(request: web.Request, *scopes: str) -> web.Response | None:
        if request[SCOPES_KEY].isdisjoint(scopes):
            return api_error(
                403, "Request had insufficient authentication scopes.", "insufficientPermissions"
            )
        return None

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        if request.content_type != "application/x-www-form-urlencoded":
            return oauth_error(
                400, "invalid_request", "Content-Type must be application/x-www-form-urlencoded"
            )
        form = await request.post()
        if form.get("grant_type") != JWT_BEARER_GRANT:
            return oauth_error(
                400, "unsupported_grant_type", "Invalid grant_type: " + str(form.get("grant_type"))
            )
        assertion = str(form.get("assertion", ""))
        if self._credentials_broken:
            return oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(
                assertion,
                self.public_key_pem,
                algorithms=["RS256"],
                audience=self.token_uri,
                options={"require": ["iss", "aud", "exp", "iat", "scope"]},
            )
        except jwt.InvalidSignatureError:
            return oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        except jwt.ExpiredSignatureError:
            return oauth_error(
                400,
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.",
            )
        except jwt.PyJWTError as exc:
            return oauth_error(400, "invalid_grant", f"Invalid JWT: {exc}")
        if header.get("typ") != "JWT" or (self.key_id and header.get("kid") != self.key_id):
            return oauth_error(400, "invalid_grant", "Invalid JWT header.")
        if claims["exp"] - claims["iat"] > 3600:
            return oauth_error(
                400, "invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes)."
            )
        if claims["iss"] != self.client_email:
            return oauth_error(401, "invalid_client", "The OAuth client was not found.")
        if claims.get("sub") != self.subject:
            return oauth_error(400, "invalid_grant", "Invalid email or User ID")
        scopes = frozenset(str(claims["scope"]).split())
        if not scopes or not scopes <= self.authorized_scopes:
            return oauth_error(
                401,
                "unauthorized_client",
                "Client is unauthorized to retrieve access tokens "
                "using this method, or client not authorized for any of the scopes requested.",
            )
        self.assertions.append(claims)
        token = "ya29." + secrets.token_urlsafe(24)
        self.tokens[token] = (scopes, time.time() + self.token_lifetime)
        return web.json_response(
            {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"}
        )

    async def _users_get(self, request: web.Request) -> web.Response:
        if denied := self._needs(request, SCOPE_USER_READ, SCOPE_USER):
            return denied
        user = self._user(request.match_info["key"])
        if user is None:
            return api_error(404, "Resource Not Found: userKey", "notFound")
        return web.json_response(user)

    async def _sign_out(self, request: web.Request) -> web.Response:
        if denied := self._needs(request, SCOPE_USER_SECURITY):
            return denied
        user = self._user(request.match_info["key"])
        if user is None:
            return api_error(404, "Resource Not Found: userKey", "notFound")
        self.signed_out.append(user["id"])
        return web.Response(status=204)

    def _member(self, group: dict[str, Any], key: str) -> dict[str, Any]:
        if key in self.users:
            return {
                "kind": "admin#directory#member",
                "id": key,
                "email": self.users[key]["primaryEmail"],
                "role": "MEMBER",
                "type": "USER",
                "status": "SUSPENDED" if self.users[key].get("suspended") else "ACTIVE",
            }
        inner = self._group(key)
        assert inner is not None
        return {"kind": "admin#directory#member", "id": inner["id"], "email": inner["email"], "role": "MEMBER",
                "type": "GROUP", "status": "ACTIVE"}

    async def _members_list(self, request: web.Request) -> web.Response:
        if denied := self._needs(request, SCOPE_GROUP_MEMBER, SCOPE_GROUP):
            return denied
        group = self._group(request.match_info["group"])
        if group is None:
            return api_error(404, "Resource Not Found: groupKey", "notFound")
        try:
            size = min(int(request.query.get("maxResults", "200")), 200, self.page_size)
            start = (
                int(base64.urlsafe_b64decode(request.query["pageToken"]))
                if "pageToken" in request.query
                else 0
            )
        except ValueError:
            return api_error(400, "Invalid Input", "invalid")
        derived = request.query.get("includeDerivedMembership", "false")
        if derived not in ("true", "false"):
            return api_error(400, "Invalid value for includeDerivedMembership", "invalid")
        ids = sorted(group["members"])
        if derived == "true":
            ids += sorted(self._nested_users(group) - group["members"])
        body: dict[str, Any] = {
            "kind": "admin#directory#members",
            "etag": '"fake"',
            "members": [self._member(group, uid) for uid in ids[start : start + size]],
        }
        if start + size < len(ids):
            body["nextPageToken"] = base64.urlsafe_b64encode(str(start + size).encode()).decode()
        if not body["members"]:
            del body["members"]  # Google omits empty lists
        return web.json_response(body)

    async def _members_insert(self, request: web.Request) -> web.Response:
        if denied := self._needs(request, SCOPE_GROUP_MEMBER, SCOPE_GROUP):
            return denied
        group = self._group(request.match_info["group"])
        if group is None:
            return api_error(404, "Resource Not Found: groupKey", "notFound")
        try:
            body = await request.json()
        except ValueError:
            return api_error(400, "Invalid JSON payload received.", "parseError")
        user = self._user(str(body.get("id") or body.get("email") or ""))
        if user is None or body.get("role", "MEMBER") not in ("MEMBER", "MANAGER", "OWNER"):
            return api_error(400, "Invalid Input: memberKey", "invalid")
        if user["id"] in group["members"]:
            return api_error(409, "Member already exists.", "duplicate")
        group["members"].add(user["id"])
        return web.json_response(self._member(group, user["id"]))

    async def _members_delete(self, request: web.Request) -> web.Response:
        if denied := self._needs(request, SCOPE_GROUP_MEMBER, SCOPE_GROUP):
            return denied
        group = self._group(request.match_info["group"])
        member = self._user(request.match_info["member"]) or self._group(request.match_info["member"])
        if group is None:
            return api_error(404, "Resource Not Found: groupKey", "notFound")
        if member is None or member["id"] not in group["members"]:  # a nested membership is not removed
            return api_error(404, "Resource Not Found: memberKey", "notFound")
        group["members"].discard(member["id"])
        self.expiries.pop((group["email"], member["id"]), None)
        return web.Response(status=204)

    async def _has_member(self, request: web.Request) -> web.Response:
        if denied := self._needs(request, SCOPE_GROUP_MEMBER, SCOPE_GROUP):
            return denied
        group = self._group(request.match_info["group"])
        if group is None:
            return api_error(404, "Resource Not Found: groupKey", "notFound")
        user = self._user(request.match_info["member"])
        if user is None:
            return api_error(400, "Invalid Input: memberKey", "invalid")
        return web.json_response({"isMember": user["id"] in self._nested_users(group)})
