"""A strict in-memory fake of the PingOne auth server (token) and Platform API (users, group membership).

The token endpoint is ``POST /{envId}/as/token`` (Basic client credentials, form body); the API lives
under ``/v1/environments/{envId}``. Errors follow PingOne's ``{"id", "code", "message", "details"}``.
User lists are HAL (``_embedded.users``, ``_links.self`` / ``_links.next``, ``count``, ``size``),
support the SCIM filters ``email eq "x"`` and ``memberOfGroups[id eq "x"]``, and are paged with ``limit``
and an opaque ``cursor`` in the next link; pages hold ``page_size`` users.
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import time
import uuid
from collections import deque
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from connectors.base import Target

EMAIL_FILTER = re.compile(r'^email eq "((?:[^"\\]|\\.)*)"$')
GROUP_FILTER = re.compile(r'^memberOfGroups\[id eq "([^"\\]*)"\]$')
MESSAGES = {
    401: ("INVALID_TOKEN", "The request could not be completed. The access token is invalid."),
    403: ("ACCESS_FAILED", "The request could not be completed. You do not have access to this resource."),
    404: ("NOT_FOUND", "The request could not be completed. The requested resource was not found."),
    429: ("REQUEST_LIMITED", "The request could not be completed. Too many requests."),
    500: ("UNEXPECTED_ERROR", "The request could not be completed. An unexpected error occurred."),
    503: ("SERVICE_UNAVAILABLE", "The request could not be completed. The service is unavailable."),
}


def error(
    status: int,
    code: str = "",
    message: str = "",
    details: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    default_code, default_message = MESSAGES.get(
        status, ("INVALID_DATA", "The request could not be completed.")
    )
    body: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "code": code or default_code,
        "message": message or default_message,
    }
    if details:
        body["details"] = details
    return web.json_response(body, status=status, headers=headers)


class FakePingOne:
    """The fake server and its switches (``tests.connectors.conformance.FaultControls``)."""

    def __init__(
        self, *, environment_id: str, client_id: str, client_secret: str, page_size: int = 2
    ) -> None:
        self.environment_id = environment_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.page_size = page_size
        self.users: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, set[str]] = {}  # group id → user ids
        self.tokens: dict[str, float] = {}
        self.token_requests = 0
        self.requests: list[tuple[str, str]] = []  # (method, path-with-query) of API calls
        self._faults: deque[tuple[str, float, int]] = deque()
        self._api_calls = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    def add_user(self, email: str, given: str = "", family: str = "") -> str:
        uid = str(uuid.uuid4())
        self.users[uid] = {
            "id": uid,
            "email": email.lower(),
            "username": email.lower(),
            "enabled": True,
            "name": {"given": given, "family": family},
            "environment": {"id": self.environment_id},
        }
        return uid

    def set_enabled(self, uid: str, enabled: bool) -> None:
        """PingOne's user ``enabled`` (Users API: whether the user can sign on)."""
        self.users[uid]["enabled"] = enabled

    def add_group(self, members: list[str] = ()) -> str:  # type: ignore[assignment]
        gid = str(uuid.uuid4())
        self.groups[gid] = set(members)
        return gid

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
        return user_id in self.groups.get(target.id, set())

    @property
    def api_calls(self) -> int:
        return self._api_calls

    # -- server -----------------------------------------------------------------------------------

    @property
    def auth_base_url(self) -> str:
        return self.url

    @property
    def api_base_url(self) -> str:
        return self.url + "/v1"

    async def start(self) -> FakePingOne:
        env = "/v1/environments/{env}"
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/{env}/as/token", self._token)
        app.router.add_get(env + "/users", self._list_users)
        app.router.add_get(env + "/groups/{gid}", self._read_group)
        app.router.add_get(env + "/users/{uid}/memberOfGroups/{gid}", self._read_membership)
        app.router.add_post(env + "/users/{uid}/memberOfGroups", self._add_membership)
        app.router.add_delete(env + "/users/{uid}/memberOfGroups/{gid}", self._remove_membership)
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

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith("/v1/"):
            return await handler(request)  # type: ignore[no-any-return]
        self._api_calls += 1
        self.requests.append((request.method, request.path_qs))
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or self.tokens.get(token, 0.0) < time.time():
            return error(401)
        if request.match_info.get("env") != self.environment_id:
            return error(404)
        if self._faults:
            kind, value, status = self._faults.popleft()
            if kind == "429":
                return error(429, headers={"Retry-After": str(int(value))})
            if kind == "forbid":
                return error(403)
            if kind == "fail":
                return error(status)
            await asyncio.sleep(value)
        return await handler(request)  # type: ignore[no-any-return]

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        if request.match_info["env"] != self.environment_id:
            return error(404)
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if request.content_type != "application/x-www-form-urlencoded":
            return web.json_response(
                {"error": "invalid_request", "error_description": "Unsupported content type"}, status=400
            )
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            return web.json_response(
                {
                    "error": "unsupported_grant_type",
                    "error_description": "Request denied: Unsupported grant_type",
                },
                status=400,
            )
        if request.headers.get("Authorization") != f"Basic {expected}":
            return web.json_response(
                {
                    "error": "invalid_client",
                    "error_description": "Request denied: Invalid client credentials",
                },
                status=401,
            )
        token = secrets.token_urlsafe(32)
        self.tokens[token] = time.time() + 3600
        return web.json_response({"access_token": token, "token_type": "Bearer", "expires_in": 3600})

    async def _list_users(self, request: web.Request) -> web.Response:
        flt = request.query.get("filter", "")
        if match := EMAIL_FILTER.match(flt):
            email = re.sub(r"\\(.)", r"\1", match.group(1)).lower()
            found = [u for u in self.users.values() if u["email"] == email]
        elif match := GROUP_FILTER.match(flt):
            found = [self.users[uid] for uid in self.groups.get(match.group(1), set())]
        elif not flt:
            found = list(self.users.values())
        else:
            return error(400, "INVALID_FILTER", "The request could not be completed. The filter is invalid.")
        found.sort(key=lambda u: u["id"])
        try:
            limit = min(int(request.query.get("limit", "100")), self.page_size)
            start = int(base64.urlsafe_b64decode(request.query["cursor"])) if "cursor" in request.query else 0
        except ValueError:
            return error(400, "INVALID_DATA", "The request could not be completed. Invalid cursor.")
        page = found[start : start + limit]
        base = f"{self.api_base_url}/environments/{self.environment_id}/users"
        links: dict[str, Any] = {"self": {"href": f"{base}?{request.query_string}"}}
        if start + limit < len(found):
            cursor = base64.urlsafe_b64encode(str(start + limit).encode()).decode()
            links["next"] = {"href": f"{base}?{urlencode({'filter': flt, 'limit': limit, 'cursor': cursor})}"}
        return web.json_response(
            {"_links": links, "_embedded": {"users": page}, "count": len(found), "size": len(page)}
        )

    def _membership(self, request: web.Request, gid: str) -> dict[str, Any]:
        href = f"{self.api_base_url}/environments/{self.environment_id}/groups/{gid}"
        return {"_links": {"group": {"href": href}}, "id": gid, "type": "DIRECT"}

    async def _read_group(self, request: web.Request) -> web.Response:
        """``GET /environments/{envId}/groups/{groupId}`` (PingOne Platform API, "READ One Group"): the group
        resource, or 404 NOT_FOUND. Only the fields the connector may read are modelled."""
        gid = request.match_info["gid"]
        if gid not in self.groups:
            return error(404)
        return web.json_response({"id": gid, "environment": {"id": self.environment_id}, "name": f"group {gid}",
                                  "directMemberCounts": {"users": len(self.groups[gid]), "groups": 0}})

    async def _read_membership(self, request: web.Request) -> web.Response:
        uid, gid = request.match_info["uid"], request.match_info["gid"]
        if uid not in self.users or uid not in self.groups.get(gid, set()):
            return error(404)
        return web.json_response(self._membership(request, gid))

    async def _add_membership(self, request: web.Request) -> web.Response:
        uid = request.match_info["uid"]
        if uid not in self.users:
            return error(404)
        try:
            body = await request.json()
        except ValueError:
            return error(
                400, "INVALID_DATA", "The request could not be completed. The request body is invalid."
            )
        gid = body.get("id") if isinstance(body, dict) else None
        if gid not in self.groups:
            return error(
                400,
                "INVALID_DATA",
                details=[{"code": "INVALID_VALUE", "target": "id", "message": "Group not found"}],
            )
        if uid in self.groups[gid]:
            # Assumption: PingOne's API reference does not document its answer to adding a member again;
            # this 400 INVALID_DATA / UNIQUENESS_VIOLATION is modelled on its documented error format. The
            # connector checks membership first, so it relies on this only in a race.
            return error(
                400,
                "INVALID_DATA",
                details=[
                    {
                        "code": "UNIQUENESS_VIOLATION",
                        "target": "id",
                        "message": "User is already a member of the group",
                    }
                ],
            )
        self.groups[gid].add(uid)
        return web.json_response(self._membership(request, gid), status=201)

    async def _remove_membership(self, request: web.Request) -> web.Response:
        uid, gid = request.match_info["uid"], request.match_info["gid"]
        if uid not in self.groups.get(gid, set()):
            return error(404)
        self.groups[gid].discard(uid)
        return web.Response(status=204)
