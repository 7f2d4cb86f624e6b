"""A strict in-memory fake of the OneLogin API (token v2, users v2, roles v2, v1 logout).

Auth as documented: the token endpoint takes ``Authorization: Basic base64(client_id:client_secret)``
and ``{"grant_type": "client_credentials"}``; v2 calls need ``Authorization: bearer <token>``, v1 calls
``bearer:<token>``, with a token this fake issued. v2 errors are ``{"message", "statusCode", "name"}``,
v1 errors ``{"status": {"error", "code", "type", "message"}}``. Lists are paged with ``limit`` /
``page`` / ``cursor`` and the ``Total-Pages``, ``Total-Count``, ``Current-Page``, ``Page-Items``,
``Before-Cursor`` and ``After-Cursor`` headers; pages hold ``page_size`` items, and ``limit`` is at most
100 ("How many items to return at one time (max 100)", onelogin-python-sdk ``docs/RolesApi.md`` and
``docs/UsersV2Api.md``; what the service does with more is not documented: the fake answers 400).

Role users are rows ``{id, name, username, added_by, added_at, assigned}`` (``docs/Schema1.md``): no
email. A user's ``username`` is its own attribute, not necessarily an email (``add_user(username=)``);
by default the fake makes it the email's local part. ``GET /api/2/users`` filters by ``email`` and by
``user_ids`` (a comma-separated list of user ids, ``docs/UsersV2Api.md``).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import secrets
import time
from collections import deque
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from connectors.base import Target

NAMES = {
    400: "BadRequestError",
    401: "UnauthorizedError",
    403: "ForbiddenError",
    404: "NotFoundError",
    422: "UnprocessableEntityError",
    429: "TooManyRequestsError",
    500: "InternalServerError",
    502: "BadGatewayError",
    503: "ServiceUnavailableError",
}


def v2_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"message": message, "statusCode": status, "name": NAMES.get(status, "Error")}
    return web.json_response(body, status=status, headers=headers)


def v1_status(code: int, message: str, kind: str) -> web.Response:
    body = {"status": {"error": code >= 400, "code": code, "type": kind, "message": message}}
    return web.json_response(body, status=code)


class FakeOneLogin:
    """The fake server and its switches (``tests.connectors.conformance.FaultControls``)."""

    def __init__(
        self, *, client_id: str, client_secret: str, page_size: int = 2, token_lifetime: int = 36000
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.page_size = page_size
        self.token_lifetime = token_lifetime
        self.users: dict[int, dict[str, Any]] = {}
        self.roles: dict[int, dict[str, Any]] = {}  # id → {"id", "name", "users": set of user ids}
        self.tokens: dict[str, float] = {}  # access token → expiry
        self.token_requests = 0
        self.logged_out: list[int] = []
        self.requests: list[tuple[str, str, str]] = []  # (method, path, Authorization) of API calls
        self._faults: deque[tuple[str, float, int]] = deque()
        self._api_calls = 0
        self._ids = itertools.count(54963040)
        self._runner: web.AppRunner | None = None
        self.url = ""

    def add_user(self, email: str, first: str = "", last: str = "", *, username: str | None = None) -> int:
        uid = next(self._ids)
        self.users[uid] = {
            "id": uid,
            "email": email.lower(),
            "username": username if username is not None else email.lower().partition("@")[0],
            "firstname": first,
            "lastname": last,
            "status": 1,
            "state": 1,
        }
        return uid

    def set_status(self, uid: int, status: int) -> None:
        """OneLogin's user ``status`` (API v2 Users: 1 active, 2 suspended, 3 locked, ...)."""
        self.users[uid]["status"] = status

    def add_role(self, name: str, users: list[int] = ()) -> int:  # type: ignore[assignment]
        rid = next(self._ids)
        self.roles[rid] = {"id": rid, "name": name, "users": set(users)}
        return rid

    # -- FaultControls ----------------------------------------------------------------------------

    def rate_limit_next(self, retry_after: float, count: int = 1) -> None:
        self._faults.extend([("429", retry_after, 429)] * count)

    def fail_next(self, status: int = 503, count: int = 1) -> None:
        self._faults.extend([("fail", 0.0, status)] * count)

    def forbid_next(self, count: int = 1) -> None:
        self._faults.extend([("forbid", 0.0, 403)] * count)

    def slow_next(self, seconds: float, count: int = 1) -> None:
        self._faults.extend([("slow", seconds, 200)] * count)

    def break_credentials(self) -> None:
        self.client_secret = secrets.token_hex(16)
        self.tokens.clear()

    def is_member(self, target: Target, user_id: str) -> bool:
        role = self.roles.get(int(target.id))
        return role is not None and int(user_id) in role["users"]

    @property
    def api_calls(self) -> int:
        return self._api_calls

    # -- server -----------------------------------------------------------------------------------

    async def start(self) -> FakeOneLogin:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/auth/oauth2/v2/token", self._token)
        app.router.add_get("/api/2/users", self._list_users)
        app.router.add_get("/api/2/roles/{id}/users", self._role_users)
        app.router.add_post("/api/2/roles/{id}/users", self._add_role_users)
        app.router.add_delete("/api/2/roles/{id}/users", self._remove_role_users)
        app.router.add_put("/api/1/users/{id}/logout", self._logout)
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

    def _token_ok(self, token: str) -> bool:
        return self.tokens.get(token, 0.0) > time.time()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith("/api/"):
            return await handler(request)  # type: ignore[no-any-return]
        self._api_calls += 1
        auth = request.headers.get("Authorization", "")
        self.requests.append((request.method, request.path, auth))
        if request.path.startswith("/api/1/"):
            scheme, sep, token = auth.partition(":")
            if not sep or scheme.lower() != "bearer" or " " in token:
                return v1_status(400, "Authorization Information is incorrect", "bad request")
            if not self._token_ok(token):
                return v1_status(401, "Authentication Failure", "Unauthorized")
        else:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not self._token_ok(token):
                return v2_error(401, "Unauthorized")
        if self._faults:
            kind, value, status = self._faults.popleft()
            if kind == "429":
                return v2_error(
                    429,
                    "Too Many Requests",
                    headers={
                        "ratelimit-limit": "5000",
                        "ratelimit-remaining": "0",
                        "ratelimit-reset": str(int(value)),
                    },
                )
            if kind == "forbid":
                return v2_error(403, "Forbidden")
            if kind == "fail":
                return v2_error(status, "Internal Server Error" if status == 500 else "Service Unavailable")
            await asyncio.sleep(value)
        return await handler(request)  # type: ignore[no-any-return]

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        auth = request.headers.get("Authorization", "")
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if request.content_type == "application/json":
            grant = (await request.json()).get("grant_type")
        else:
            grant = parse_qs(await request.text()).get("grant_type", [""])[0]
        if grant != "client_credentials":
            return v2_error(400, "grant_type is incorrect/absent")
        if auth != f"Basic {expected}":
            return v2_error(401, "Invalid client credentials")  # undocumented wording
        token = secrets.token_hex(32)
        self.tokens[token] = time.time() + self.token_lifetime
        return web.json_response(
            {
                "access_token": token,
                "created_at": "2024-01-01T00:00:00.000Z",
                "expires_in": self.token_lifetime,
                "refresh_token": secrets.token_hex(32),
                "token_type": "bearer",
                "account_id": 555555,
            }
        )

    def _page(self, request: web.Request, items: list[Any]) -> web.Response:
        query = request.query
        try:
            if "cursor" in query:
                decoded = parse_qs(base64.b64decode(query["cursor"]).decode())
                limit, page = int(decoded["limit"][0]), int(decoded["page"][0])
            else:
                limit, page = int(query.get("limit", "50")), int(query.get("page", "1"))
        except (ValueError, KeyError):
            return v2_error(400, "Invalid cursor")
        if limit > 100:
            return v2_error(400, "limit must be at most 100")
        limit = max(1, min(limit, self.page_size))
        pages = max(1, -(-len(items) // limit))
        chunk = items[(page - 1) * limit : page * limit]
        headers = {
            "Total-Pages": str(pages),
            "Total-Count": str(len(items)),
            "Current-Page": str(page),
            "Page-Items": str(len(chunk)),
        }
        if page < pages:
            headers["After-Cursor"] = base64.b64encode(f"limit={limit}&page={page + 1}".encode()).decode()
        if page > 1:
            headers["Before-Cursor"] = base64.b64encode(f"limit={limit}&page={page - 1}".encode()).decode()
        return web.json_response(chunk, headers=headers)

    async def _list_users(self, request: web.Request) -> web.Response:
        email = request.query.get("email", "").lower()
        try:
            ids = {int(i) for i in request.query["user_ids"].split(",")} if "user_ids" in request.query else None
        except ValueError:
            return v2_error(400, "user_ids must be a comma separated list of user ids")
        users = sorted(
            (u for u in self.users.values()
             if (not email or u["email"] == email) and (ids is None or u["id"] in ids)),
            key=lambda u: u["id"],
        )
        return self._page(request, users)

    def _role(self, request: web.Request) -> dict[str, Any] | None:
        rid = request.match_info["id"]
        return self.roles.get(int(rid)) if rid.isdigit() else None

    async def _role_users(self, request: web.Request) -> web.Response:
        role = self._role(request)
        if role is None:
            return v2_error(404, "The resource with the given id could not be found")
        name = request.query.get("name", "").lower()
        rows = []
        for uid in sorted(role["users"]):
            user = self.users[uid]
            fields = (user["firstname"], user["lastname"], user["username"], user["email"])
            if name and not any(name in str(f).lower() for f in fields):
                continue
            rows.append(
                {
                    "id": uid,
                    "name": f"{user['firstname']} {user['lastname']}".strip(),
                    "username": user["username"],
                    "added_by": {"id": 678, "name": "Susan Boss"},
                    "added_at": "2019-12-27T00:00:00Z",
                    "assigned": True,
                }
            )
        return self._page(request, rows)

    async def _user_ids(self, request: web.Request) -> list[int] | web.Response:
        if request.content_type != "application/json":
            return v2_error(400, "Content-Type must be application/json")
        try:
            ids = await request.json()
        except ValueError:
            return v2_error(400, "Invalid JSON")
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            return v2_error(422, "Validation failed: expected an array of user ids")
        if any(i not in self.users for i in ids):
            return v2_error(422, "Validation failed: user not found")
        return ids

    async def _add_role_users(self, request: web.Request) -> web.Response:
        role = self._role(request)
        if role is None:
            return v2_error(404, "The resource with the given id could not be found")
        ids = await self._user_ids(request)
        if isinstance(ids, web.Response):
            return ids
        # Assumption: RolesApi.md documents 200 with the ids and no answer for a user who already holds the
        # role; the fake treats that as success (the connector checks membership first anyway).
        role["users"].update(ids)
        return web.json_response([{"id": i} for i in ids])

    async def _remove_role_users(self, request: web.Request) -> web.Response:
        role = self._role(request)
        if role is None:
            return v2_error(404, "The resource with the given id could not be found")
        ids = await self._user_ids(request)
        if isinstance(ids, web.Response):
            return ids
        # Assumption: removing a user who does not hold the role is not documented; the fake answers 204.
        role["users"].difference_update(ids)
        return web.Response(status=204)

    async def _logout(self, request: web.Request) -> web.Response:
        uid = request.match_info["id"]
        if not uid.isdigit() or int(uid) not in self.users:
            return v1_status(404, "User not found", "not found")
        self.logged_out.append(int(uid))
        return v1_status(200, "Success", "success")
