"""PingOne (Ping Identity) Platform API over aiohttp with a Worker app's client credentials.

* token: ``POST {auth}/{envId}/as/token`` (``auth`` = ``https://auth.pingone.<region>``) with
  ``Authorization: Basic base64(client_id:client_secret)`` and ``grant_type=client_credentials``; the
  token (one hour) is cached until shortly before ``expires_in`` runs out,
* user by email: ``GET {api}/environments/{envId}/users?filter=email eq "<email>"`` (SCIM filter),
* group members: ``GET .../users?filter=memberOfGroups[id eq "<groupId>"]&limit=n``, following
  ``_links.next.href`` (only while it stays on the configured API origin, so the token never leaves it),
* membership: ``GET`` / ``DELETE .../users/{userId}/memberOfGroups/{groupId}``,
  ``POST .../users/{userId}/memberOfGroups`` with ``{"id": groupId}``.

``grant`` checks membership first, so it reports ``added=False`` for standing access. Errors
(``{"id", "code", "message", "details"}``): 429 → ``RateLimited`` (``Retry-After``); 401/403 →
``PermissionDenied``; 404 → ``NotFound`` (success for removal); 5xx, timeouts, connection errors →
``Transient``. Secrets never reach a log line or an error message.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from yarl import URL

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


class PingOneConfig(BaseModel):
    """Settings of a ``type: pingone`` connector."""

    model_config = ConfigDict(extra="forbid")
    type: str = "pingone"
    environment_id: str
    client_id: str
    client_secret: SecretStr
    # PingOne's IP address and domain reference: North America com, Canada ca, Europe eu, Australia com.au,
    # Singapore sg, and asia (Asia Pacific, legacy: "available only for existing .asia customers")
    region: Literal["com", "ca", "eu", "com.au", "sg", "asia"] = "com"
    auth_base_url: str | None = None  # default https://auth.pingone.{region}
    api_base_url: str | None = None  # default https://api.pingone.{region}/v1
    timeout: float = Field(default=15.0, gt=0)
    page_size: int = Field(default=100, ge=1, le=1000)
    default_retry_after: float = Field(default=10.0, ge=0)


def retry_after_seconds(headers: Any, default: float) -> float:
    value = headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value else default
    except ValueError:
        return default


def scim_string(value: str) -> str:
    """A SCIM filter string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _message(data: Any) -> str:
    if not isinstance(data, dict):
        return ""
    parts = [str(data.get(k)) for k in ("code", "message", "error", "error_description") if data.get(k)]
    details = data.get("details")
    if isinstance(details, list):
        parts += [f"[{d.get('code', '')}: {d.get('message', '')}]" for d in details if isinstance(d, dict)]
    return " ".join(parts)


class PingOneConnector:
    """Grants PingOne group membership."""

    def __init__(
        self, name: str, config: PingOneConfig, session: aiohttp.ClientSession | None = None
    ) -> None:
        self.name = name
        self._config = config
        auth = (config.auth_base_url or f"https://auth.pingone.{config.region}").rstrip("/")
        self._token_url = f"{auth}/{config.environment_id}/as/token"
        self._api = (config.api_base_url or f"https://api.pingone.{config.region}/v1").rstrip("/")
        self._env = f"{self._api}/environments/{config.environment_id}"
        self._origin = urlsplit(self._api)[:2]
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
            headers = {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode("ascii")}
            try:
                async with self._http().post(
                    self._token_url,
                    data={"grant_type": "client_credentials"},
                    headers=headers,
                    timeout=self._timeout,
                ) as resp:
                    data = await resp.json(content_type=None)
                    status, resp_headers = resp.status, resp.headers
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                raise Transient(
                    f"{self.name}: token endpoint {self._token_url} unreachable ({type(exc).__name__})"
                ) from None
            log.debug("%s: POST /as/token -> %s", self.name, status)
            if status == 200 and isinstance(data, dict) and data.get("access_token"):
                self._token = str(data["access_token"])
                self._token_expires = time.monotonic() + max(0.0, float(data.get("expires_in", 3600)) - 60)
                return self._token
            if status == 429:
                raise RateLimited(
                    f"{self.name}: token endpoint throttled us",
                    retry_after=retry_after_seconds(resp_headers, self._config.default_retry_after),
                )
            if status >= 500:
                raise Transient(f"{self.name}: token endpoint answered {status}")
            raise PermissionDenied(
                f"{self.name}: PingOne rejected worker app {self._config.client_id} "
                f"({status} {_message(data)})",
                user_message="PingOne rejected the access bot's credentials.",
            )

    async def _call(
        self, method: str, url: str, *, params: dict[str, str] | None = None, body: Any = None
    ) -> tuple[int, Any, Any]:
        """One API call to ``url``; a 401 refreshes the token once. Returns (status, json, headers)."""
        path = urlsplit(url).path
        for attempt in (1, 2):
            token = await self._access_token(force=attempt == 2)
            # spaces as %20 as PingOne documents; next links are used exactly as sent
            query = "?" + urlencode(params, quote_via=quote) if params else ""
            status, data, headers = await exchange(
                self._http(), method, URL(url + query, encoded=True), name=self.name, path=path, json=body,
                timeout=self._timeout, headers={"Authorization": f"Bearer {token}"})
            log.debug("%s: %s %s -> %s", self.name, method, path, status)
            if status != 401 or attempt == 2:
                return status, data, headers
        raise AssertionError("unreachable")

    def _error(self, status: int, data: Any, headers: Any, what: str) -> ConnectorError:
        return error_for_status(status, f"{self.name}: {what}: {status} {_message(data)}".rstrip(),
                                provider="PingOne", subject="user or group",
                                retry_after=retry_after_seconds(headers, self._config.default_retry_after))

    @staticmethod
    def _group(target: Target | str) -> str:
        target = parse_target_ref(target) if isinstance(target, str) else target
        if target.kind is not TargetKind.GROUP or "/" in target.id or not target.id:
            raise ConfigError(f"PingOne grants groups by id, not {target}")
        return target.id

    def _user(self, user: IdpUser) -> str:
        if not user.id or "/" in user.id:
            raise ConfigError(f"not a PingOne user id: {user.id!r}")
        return f"{self._env}/users/{quote(user.id, safe='')}"

    @staticmethod
    def _idp_user(data: dict[str, Any]) -> IdpUser:
        name = data["name"] if isinstance(data.get("name"), dict) else {}
        display = str(name.get("formatted") or " ".join(str(name.get(k, "")) for k in ("given", "family")))
        return IdpUser(
            id=str(data["id"]),
            email=str(data.get("email") or data.get("username") or "").lower(),
            display_name=display.strip(),
            active=data.get("enabled") is not False,  # a disabled PingOne user (``enabled``) counts in no group
        )

    async def _users(self, scim_filter: str) -> list[dict[str, Any]]:
        url: str | None = f"{self._env}/users"
        params: dict[str, str] | None = {"filter": scim_filter, "limit": str(self._config.page_size)}
        users: list[dict[str, Any]] = []
        while url:
            status, data, headers = await self._call("GET", url, params=params)
            if status != 200 or not isinstance(data, dict):
                raise self._error(status, data, headers, "read users")
            users.extend((data.get("_embedded") or {}).get("users", []))
            url = ((data.get("_links") or {}).get("next") or {}).get("href")
            params = None  # the next link carries the filter, limit and cursor
            if url and urlsplit(url)[:2] != self._origin:
                raise ConnectorError(f"{self.name}: refusing to follow a next link off {self._api}")
        return users

    async def check(self, usage: Usage = READ_ONLY) -> list[Check]:
        checks = [Check("config", True, f"environment {self._config.environment_id} ({self._api})")]
        try:
            await self._access_token(force=True)
        except Transient as exc:
            return [
                *checks,
                Check(
                    "reachable",
                    False,
                    f"Cannot reach PingOne: {exc}. Check region, auth_base_url, network and proxy.",
                ),
            ]
        except ConnectorError as exc:
            return [
                *checks,
                Check(
                    "credentials",
                    False,
                    f"PingOne refused a token: {exc}. Check client_id, "
                    "client_secret and environment_id of the Worker app, that it is enabled and "
                    "uses Client Secret Basic.",
                ),
            ]
        checks.append(Check("credentials", True, "token issued"))
        status, data, headers = await self._call("GET", f"{self._env}/users", params={"limit": "1"})
        if status == 200:
            checks.append(Check("permissions", True, "can read users"))
        elif status in (401, 403):
            checks.append(
                Check(
                    "permissions",
                    False,
                    f"PingOne refused to read users ({_message(data)}). Grant "
                    "the Worker app the Identity Data Admin role for this environment.",
                )
            )
        else:
            checks.append(
                Check(
                    "directory", False, f"Reading users failed: {self._error(status, data, headers, 'users')}"
                )
            )
        return checks

    async def find_user(self, email: str) -> IdpUser | None:
        email = email.strip().lower()
        for data in await self._users(f"email eq {scim_string(email)}"):
            if str(data.get("email", "")).lower() == email:
                return self._idp_user(data)
        return None

    async def list_members(self, group: str) -> list[IdpUser]:
        """The group's members. The group is read first (``GET /groups/{id}``): a member filter on an
        unknown group id is an empty list, and a group that does not exist must say so (``NotFound``)."""
        gid = self._group(group)
        status, data, headers = await self._call("GET", f"{self._env}/groups/{quote(gid, safe='')}")
        if status != 200:
            raise self._error(status, data, headers, "read group")
        return [self._idp_user(u) for u in await self._users(f"memberOfGroups[id eq {scim_string(gid)}]")]

    async def is_member(self, user: IdpUser, target: Target) -> bool:
        url = f"{self._user(user)}/memberOfGroups/{quote(self._group(target), safe='')}"
        status, data, headers = await self._call("GET", url)
        if status == 404:
            return False
        if status != 200:
            raise self._error(status, data, headers, "read group membership")
        return True

    async def grant(
        self, user: IdpUser, target: Target, *, grant_id: str, expires_at: datetime
    ) -> GrantResult:
        gid = self._group(target)
        if await self.is_member(user, target):
            return GrantResult(added=False)
        status, data, headers = await self._call(
            "POST", f"{self._user(user)}/memberOfGroups", body={"id": gid}
        )
        if status in (200, 201):
            return GrantResult(added=True)
        details = data.get("details") if isinstance(data, dict) else None
        if (
            status in (400, 409)
            and isinstance(details, list)
            and any(isinstance(d, dict) and d.get("code") == "UNIQUENESS_VIOLATION" for d in details)
        ):
            return GrantResult(added=False)  # added by someone else since our check
        raise self._error(status, data, headers, "add user to group")

    async def revoke(self, user: IdpUser, target: Target, *, grant_id: str) -> None:
        url = f"{self._user(user)}/memberOfGroups/{quote(self._group(target), safe='')}"
        status, data, headers = await self._call("DELETE", url)
        if status not in (200, 204, 404):  # 404: not a member, which is what we want
            raise self._error(status, data, headers, "remove user from group")

    async def aclose(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None


def from_settings(name: str, settings: dict[str, Any]) -> PingOneConnector:
    """Build the connector from its policy settings."""
    config = validate_settings(PingOneConfig, settings, label=f"connector {name!r}")
    return PingOneConnector(name, config)
