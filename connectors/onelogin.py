"""OneLogin: API v2 over aiohttp with OAuth 2.0 client credentials.

OneLogin grants application access through roles, so targets are roles: ``Target(ROLE, "<role id>")``
(or ``role:<id>`` in the policy). Calls:

* token: ``POST /auth/oauth2/v2/token`` with ``Authorization: Basic base64(client_id:client_secret)`` and
  ``{"grant_type": "client_credentials"}``; the access token (10 hours) is cached until shortly before
  ``expires_in`` runs out,
* user by email: ``GET /api/2/users?email=<email>``,
* role members: ``GET /api/2/roles/{id}/users`` paged with ``limit`` (at most 100, onelogin-python-sdk
  ``docs/RolesApi.md``) and the ``After-Cursor`` header (sent back as ``cursor``). Its rows are
  ``{id, name, username, added_by, added_at, assigned}`` (``docs/Schema1.md``): no email, and a username
  need not be one, so members are resolved to people by their user ids with
  ``GET /api/2/users?user_ids=<id,id,…>`` (``docs/UsersV2Api.md``, ``list_users2``), 100 ids a call,
* add / remove: ``POST`` / ``DELETE /api/2/roles/{id}/users`` with a JSON array of user ids,
* log a user out: ``PUT /api/1/users/{id}/logout`` (v1, ``Authorization: bearer:<token>``).

v2 calls send ``Authorization: bearer <token>`` as documented. Adding a user who already holds the role
is detected by a membership check first (the add call itself does not say), so ``grant`` reports
``added=False`` for standing access. Errors: 429 → ``RateLimited`` (``Retry-After``, else the
``ratelimit-reset`` / ``X-RateLimit-Reset`` seconds); 401/403 → ``PermissionDenied``; 404 → ``NotFound``
(success for removal); 5xx, timeouts, connection errors → ``Transient``. Secrets never reach a log line
or an error message.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from datetime import datetime
from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from connectors.base import (
    READ_ONLY,
    Check,
    ConfigError,
    ConnectorError,
    GrantResult,
    IdpUser,
    PermissionDenied,
    RateLimited,
    Target,
    TargetKind,
    Transient,
    Usage,
    parse_target_ref,
)
from connectors.rest import error_for_status, exchange, validate_settings

log = logging.getLogger(__name__)


class OneLoginConfig(BaseModel):
    """Settings of a ``type: onelogin`` connector."""

    model_config = ConfigDict(extra="forbid")
    type: str = "onelogin"
    base_url: str  # https://<subdomain>.onelogin.com (or https://api.us.onelogin.com)
    client_id: str
    client_secret: SecretStr
    timeout: float = Field(default=15.0, gt=0)
    page_size: int = Field(default=100, ge=1, le=100)  # role users and users: "max 100" (onelogin-python-sdk docs)
    default_retry_after: float = Field(default=10.0, ge=0)


def retry_after_seconds(headers: Any, default: float) -> float:
    """Seconds to wait from ``Retry-After``, ``ratelimit-reset`` or ``X-RateLimit-Reset`` (all seconds)."""
    for name in ("Retry-After", "ratelimit-reset", "X-RateLimit-Reset"):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value))
            except ValueError:
                continue
    return default


def _message(data: Any) -> str:
    """The message of a v2 (``{"message", "statusCode", "name"}``) or v1 (``{"status": {...}}``) error."""
    if isinstance(data, dict):
        if isinstance(data.get("status"), dict):
            return str(data["status"].get("message", ""))
        return " ".join(
            str(data[k]) for k in ("name", "message", "error", "error_description") if data.get(k)
        )
    return ""


class OneLoginConnector:
    """Grants OneLogin roles."""

    def __init__(
        self, name: str, config: OneLoginConfig, session: aiohttp.ClientSession | None = None
    ) -> None:
        self.name = name
        self._config = config
        self._base = config.base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=config.timeout)
        self._session = session
        self._owns_session = session is None
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = asyncio.Lock()
        self.token_requests = 0

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def _access_token(self, *, force: bool = False) -> str:
        async with self._token_lock:
            if not force and self._token and time.monotonic() < self._token_expires:
                return self._token
            self.token_requests += 1
            pair = f"{self._config.client_id}:{self._config.client_secret.get_secret_value()}"
            auth = {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode("ascii")}
            url = self._base + "/auth/oauth2/v2/token"
            try:
                async with self._http().post(
                    url, json={"grant_type": "client_credentials"}, headers=auth, timeout=self._timeout
                ) as resp:
                    data = await resp.json(content_type=None)
                    status, headers = resp.status, resp.headers
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                raise Transient(
                    f"{self.name}: token endpoint {url} unreachable ({type(exc).__name__})"
                ) from None
            log.debug("%s: POST /auth/oauth2/v2/token -> %s", self.name, status)
            if status == 200 and isinstance(data, dict) and data.get("access_token"):
                self._token = str(data["access_token"])
                lifetime = float(data.get("expires_in", 36000))
                self._token_expires = time.monotonic() + max(0.0, lifetime - 60)
                return self._token
            if status == 429:
                raise RateLimited(
                    f"{self.name}: token endpoint throttled us",
                    retry_after=retry_after_seconds(headers, self._config.default_retry_after),
                )
            if status >= 500:
                raise Transient(f"{self.name}: token endpoint answered {status}")
            raise PermissionDenied(
                f"{self.name}: OneLogin rejected API credentials {self._config.client_id} ({status} "
                f"{_message(data)})".rstrip(),
                user_message="OneLogin rejected the access bot's API credentials.",
            )

    async def _call(
        self, method: str, path: str, *, params: dict[str, str] | None = None, body: Any = None
    ) -> tuple[int, Any, Any]:
        """One API call; a 401 refreshes the token once. Returns (status, json, headers)."""
        v1 = path.startswith("/api/1/")
        for attempt in (1, 2):
            token = await self._access_token(force=attempt == 2)
            auth = f"bearer:{token}" if v1 else f"bearer {token}"  # as each API version documents it
            status, data, headers = await exchange(
                self._http(), method, self._base + path, name=self.name, path=path, params=params, json=body,
                headers={"Authorization": auth}, timeout=self._timeout)
            log.debug("%s: %s %s -> %s", self.name, method, path, status)
            if status != 401 or attempt == 2:
                return status, data, headers
        raise AssertionError("unreachable")

    def _error(self, status: int, data: Any, headers: Any, what: str) -> ConnectorError:
        return error_for_status(status, f"{self.name}: {what}: {status} {_message(data)}".rstrip(),
                                provider="OneLogin", subject="user or role",
                                retry_after=retry_after_seconds(headers, self._config.default_retry_after))

    @staticmethod
    def _role(target: Target | str) -> str:
        if isinstance(target, str):
            target = parse_target_ref(target)
            target = Target(TargetKind.ROLE, target.id)  # a bare id names a role here
        if target.kind is not TargetKind.ROLE or not target.id.isdigit():
            raise ConfigError(f"OneLogin grants roles by numeric id (role:<id>), not {target}")
        return target.id

    @staticmethod
    def _user_id(user: IdpUser) -> int:
        if not user.id.isdigit():
            raise ConfigError(f"not a OneLogin user id: {user.id!r}")
        return int(user.id)

    async def check(self, usage: Usage = READ_ONLY) -> list[Check]:
        checks = [Check("config", True, f"{self._base} with API credentials {self._config.client_id}")]
        try:
            await self._access_token(force=True)
        except Transient as exc:
            return [
                *checks,
                Check(
                    "reachable",
                    False,
                    f"Cannot reach OneLogin: {exc}. Check base_url "
                    "(https://<subdomain>.onelogin.com), network and proxy.",
                ),
            ]
        except ConnectorError as exc:
            return [
                *checks,
                Check(
                    "credentials",
                    False,
                    f"OneLogin refused a token: {exc}. Check client_id "
                    "and client_secret (Administration > Developers > API Credentials).",
                ),
            ]
        checks.append(Check("credentials", True, "token issued"))
        status, data, headers = await self._call("GET", "/api/2/users", params={"limit": "1"})
        if status == 200:
            checks.append(Check("permissions", True, "can read users"))
        elif status in (401, 403):
            checks.append(
                Check(
                    "permissions",
                    False,
                    f"OneLogin refused to list users ({status}). Create the "
                    "API credentials with the 'Manage All' scope (roles and users).",
                )
            )
        else:
            checks.append(
                Check(
                    "directory", False, f"Listing users failed: {self._error(status, data, headers, 'users')}"
                )
            )
        return checks

    async def find_user(self, email: str) -> IdpUser | None:
        email = email.strip().lower()
        if not email or any(c in email for c in "*!,"):  # the email filter treats these as operators
            return None
        status, data, headers = await self._call("GET", "/api/2/users", params={"email": email})
        if status != 200 or not isinstance(data, list):
            raise self._error(status, data, headers, "list users")
        for user in data:
            if str(user.get("email", "")).lower() == email:
                name = " ".join(str(user.get(k) or "") for k in ("firstname", "lastname")).strip()
                return IdpUser(id=str(user["id"]), email=email, display_name=name, active=_active(user))
        return None

    async def _role_users(self, role: str, *, name: str | None = None) -> list[dict[str, Any]]:
        users: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params = {"limit": str(self._config.page_size)}
            if name:
                params["name"] = name
            if cursor:
                params["cursor"] = cursor
            status, data, headers = await self._call("GET", f"/api/2/roles/{role}/users", params=params)
            if status != 200 or not isinstance(data, list):
                raise self._error(status, data, headers, "get role users")
            users.extend(u for u in data if isinstance(u, dict) and u.get("assigned", True))
            cursor = headers.get("After-Cursor")
            if not cursor or not data:
                return users

    async def _users_by_id(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        """The user records of ``ids`` (``list_users2`` with ``user_ids``), 100 ids a call, pages followed."""
        found: dict[int, dict[str, Any]] = {}
        for start in range(0, len(ids), 100):
            cursor: str | None = None
            while True:
                params = {"user_ids": ",".join(str(i) for i in ids[start:start + 100]),
                          "limit": str(self._config.page_size)}
                if cursor:
                    params["cursor"] = cursor
                status, data, headers = await self._call("GET", "/api/2/users", params=params)
                if status != 200 or not isinstance(data, list):
                    raise self._error(status, data, headers, "list users by id")
                found.update((u["id"], u) for u in data if isinstance(u, dict) and isinstance(u.get("id"), int))
                cursor = headers.get("After-Cursor")
                if not cursor or not data:
                    break
        return found

    async def list_members(self, group: str) -> list[IdpUser]:
        """The role's users as people: role rows carry no email, so each is read by its user id."""
        ids = [u["id"] for u in await self._role_users(self._role(group)) if isinstance(u.get("id"), int)]
        users = await self._users_by_id(ids)
        members = []
        for uid in ids:
            user = users.get(uid)
            if user is None:  # removed between the two reads: no longer a member of anything
                continue
            name = " ".join(str(user.get(k) or "") for k in ("firstname", "lastname")).strip()
            members.append(IdpUser(id=str(uid), email=str(user.get("email") or "").lower(), display_name=name,
                                   active=_active(user)))
        return members

    async def is_member(self, user: IdpUser, target: Target) -> bool:
        uid = self._user_id(user)
        # ``name`` narrows the listing to names, usernames and emails matching the user's email
        found = await self._role_users(self._role(target), name=user.email or None)
        return any(u.get("id") == uid for u in found)

    async def grant(
        self, user: IdpUser, target: Target, *, grant_id: str, expires_at: datetime
    ) -> GrantResult:
        role, uid = self._role(target), self._user_id(user)
        if await self.is_member(user, target):
            return GrantResult(added=False)
        status, data, headers = await self._call("POST", f"/api/2/roles/{role}/users", body=[uid])
        if status not in (200, 201):
            raise self._error(status, data, headers, "add role users")
        return GrantResult(added=True)

    async def revoke(self, user: IdpUser, target: Target, *, grant_id: str) -> None:
        role, uid = self._role(target), self._user_id(user)
        status, data, headers = await self._call("DELETE", f"/api/2/roles/{role}/users", body=[uid])
        if status not in (200, 204, 404):  # 404: nothing to remove, which is what we want
            raise self._error(status, data, headers, "remove role users")

    async def terminate_sessions(self, user: IdpUser) -> None:
        """End the user's OneLogin session (new SSO flows need a fresh sign-in)."""
        status, data, headers = await self._call("PUT", f"/api/1/users/{self._user_id(user)}/logout")
        if status != 200:
            raise self._error(status, data, headers, "log user out")

    async def aclose(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None


def from_settings(name: str, settings: dict[str, Any]) -> OneLoginConnector:
    """Build the connector from its policy settings."""
    config = validate_settings(OneLoginConfig, settings, label=f"connector {name!r}")
    return OneLoginConnector(name, config)


# OneLogin's user ``status`` (API v2, Users): 0 unactivated, 1 active, 2 suspended, 3 locked, 4 password
# expired, 5 awaiting password reset, 7 password pending, 8 security questions required.
SUSPENDED = 2


def _active(user: dict[str, Any]) -> bool:
    """A suspended OneLogin user counts in no group (role) for jitbot."""
    return user.get("status") != SUSPENDED
