"""Google Workspace: Admin SDK Directory API over aiohttp, service account with domain-wide delegation.

Tokens: a JWT assertion (RS256, signed with the service account's key by ``google.auth.crypt`` /
``google.auth.jwt``; ``iss`` = the service account, ``sub`` = the admin it acts as, ``scope``,
``aud`` = the token URI) is exchanged at the token URI with the RFC 7523 ``jwt-bearer`` grant. The
access token is cached until shortly before ``expires_in`` runs out. Signing happens here rather than
in ``google.oauth2.service_account.Credentials.refresh`` because that path is synchronous and retries
on its own; here every call is async, bounded by our timeout, and retries belong to
``connectors.resilience``.

Directory API calls: ``users.get``, ``members.list`` (``pageToken`` / ``nextPageToken``),
``members.insert`` (409 "Member already exists" = already a member), ``members.delete``,
``members.hasMember`` and ``users.signOut``.

Direct and nested membership (Admin SDK Directory discovery document ``admin.directory_v1``, under
tests/specs/google): a member is a user or another group; ``members.list`` lists direct members unless
``includeDerivedMembership=true``; ``members.hasMember`` answers "direct or nested"; ``members.delete``
removes a direct membership only. So ``grant`` always adds a direct membership (a nested member's too:
that membership is the grant's own), ``list_members`` marks the members who hold the group only through
a nested group (``IdpUser.direct`` False), and ``revoke`` that finds no direct membership but a nested
one raises ``IndirectMembership`` rather than reporting the access removed.

Errors: 403/429 with reason ``rateLimitExceeded`` / ``userRateLimitExceeded`` / ``quotaExceeded`` →
``RateLimited`` (``Retry-After`` when present, else ``default_retry_after``); other 401/403 →
``PermissionDenied``; 404 → ``NotFound``; 5xx, timeouts, connection errors → ``Transient``.
The private key never appears in a log line or error message. ``check``: ``connectors/google_check.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from google.auth import crypt
from google.auth import jwt as google_jwt
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from connectors import google_check
from connectors.base import (
    READ_ONLY,
    Check,
    ConfigError,
    ConnectorError,
    GrantResult,
    IdpUser,
    IndirectMembership,
    NotFound,
    PermissionDenied,
    RateLimited,
    Target,
    TargetKind,
    Transient,
    Usage,
    parse_target_ref,
)
from connectors.google_scopes import SCOPE_GROUP_MEMBER as SCOPE_GROUP_MEMBER
from connectors.google_scopes import SCOPE_USER_READ as SCOPE_USER_READ
from connectors.google_scopes import SCOPE_USER_SECURITY as SCOPE_USER_SECURITY
from connectors.rest import error_for_status, exchange, validate_settings

log = logging.getLogger(__name__)

DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded"})
DIRECTORY = "/admin/directory/v1"


class GoogleWorkspaceConfig(BaseModel):
    """Settings of a ``type: google`` connector."""

    model_config = ConfigDict(extra="forbid")
    type: str = "google"
    service_account_json: SecretStr | None = None  # the key file's content (e.g. from ${ENV})
    service_account_file: str | None = None  # or a path to the key file
    subject: str  # the admin the service account acts as (domain-wide delegation)
    token_uri: str | None = None  # default: the key file's token_uri, else Google's
    api_base_url: str = "https://admin.googleapis.com"
    timeout: float = Field(default=15.0, gt=0)
    page_size: int = Field(default=200, ge=1, le=200)
    terminate_sessions: bool = False  # also request the user.security scope for users.signOut
    default_retry_after: float = Field(default=10.0, ge=0)
    # the IdP-side expiry backstop (connectors/google_expiry.py): the Cloud Identity Groups API and its scope
    expiry_backstop: bool = False
    cloud_identity_base_url: str = "https://cloudidentity.googleapis.com"

    @model_validator(mode="after")
    def _one_key_source(self) -> GoogleWorkspaceConfig:
        if (self.service_account_json is None) == (self.service_account_file is None):
            raise ValueError("set exactly one of service_account_json or service_account_file")
        return self


def retry_after_seconds(headers: Any, default: float) -> float:
    """``Retry-After`` as seconds (delta or HTTP date), else ``default``."""
    value = headers.get("Retry-After")
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return default


def _google_error(body: Any) -> tuple[str, str]:
    """(reason, message) from Google's ``{"error": {"code", "message", "errors": [{"reason"}]}}``."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return "", ""
    errors = err.get("errors")
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
    return str(first.get("reason", "")), str(err.get("message", ""))


class GoogleWorkspaceConnector:
    """Grants Google Groups membership through the Admin SDK Directory API."""

    def __init__(
        self, name: str, config: GoogleWorkspaceConfig, session: aiohttp.ClientSession | None = None
    ) -> None:
        self.name = name
        self._config = config
        info = self._load_key(config)
        try:
            self._signer = crypt.RSASigner.from_service_account_info(info)  # type: ignore[no-untyped-call]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"connector {name!r}: the service account key could not be loaded ({type(exc).__name__})"
            ) from None
        self._client_email = str(info["client_email"])
        self._client_id = str(info.get("client_id") or self._client_email)  # domain-wide delegation lists it
        self._token_uri = config.token_uri or str(info.get("token_uri") or DEFAULT_TOKEN_URI)
        self._scopes = [SCOPE_USER_READ, SCOPE_GROUP_MEMBER]
        if config.terminate_sessions:
            self._scopes.append(SCOPE_USER_SECURITY)
        self._api = config.api_base_url.rstrip("/") + DIRECTORY
        self._timeout = aiohttp.ClientTimeout(total=config.timeout)
        self._session = session
        self._owns_session = session is None
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = asyncio.Lock()
        self.token_requests = 0  # for tests and metrics

    def _load_key(self, config: GoogleWorkspaceConfig) -> dict[str, Any]:
        try:
            if config.service_account_json is not None:
                raw = config.service_account_json.get_secret_value()
            else:
                raw = Path(str(config.service_account_file)).read_text()
            info = json.loads(raw)
        except (OSError, ValueError):
            raise ConfigError(
                f"connector {self.name!r}: the service account key is not readable JSON"
            ) from None
        if not isinstance(info, dict) or not info.get("client_email") or not info.get("private_key"):
            raise ConfigError(
                f"connector {self.name!r}: the service account key lacks client_email or private_key"
            )
        return info

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    # -- tokens -------------------------------------------------------------------------------

    def _assertion(self, scopes: list[str]) -> str:
        now = int(time.time())
        claims = {
            "iss": self._client_email,
            "sub": self._config.subject,
            "scope": " ".join(scopes),
            "aud": self._token_uri,
            "iat": now,
            "exp": now + 3600,
        }
        token: bytes = google_jwt.encode(self._signer, claims)  # type: ignore[no-untyped-call]
        return token.decode("ascii")

    async def _access_token(self, *, force: bool = False) -> str:
        async with self._token_lock:
            if not force and self._token and time.monotonic() < self._token_expires:
                return self._token
            token, expires_in = await self._request_token(self._scopes)
            self._token = token
            self._token_expires = time.monotonic() + max(0.0, expires_in - 60)
            return token

    async def _request_token(self, scopes: list[str]) -> tuple[str, float]:
        """One token for ``scopes``: ``(access token, expires_in)``; Google refuses the whole request when one
        scope is not delegated to the service account."""
        self.token_requests += 1
        form = {"grant_type": JWT_BEARER_GRANT, "assertion": self._assertion(scopes)}
        try:
            async with self._http().post(self._token_uri, data=form, timeout=self._timeout) as resp:
                body = await resp.json(content_type=None)
                status, headers = resp.status, resp.headers
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise Transient(
                f"{self.name}: token endpoint {self._token_uri} unreachable ({type(exc).__name__}: {exc})"
            ) from None
        log.debug("%s: POST token endpoint -> %s", self.name, status)
        if status == 200 and isinstance(body, dict) and body.get("access_token"):
            return str(body["access_token"]), float(body.get("expires_in", 3600))
        error = body.get("error", "") if isinstance(body, dict) else ""
        description = body.get("error_description", "") if isinstance(body, dict) else ""
        if status == 429:
            raise RateLimited(
                f"{self.name}: token endpoint throttled us",
                retry_after=retry_after_seconds(headers, self._config.default_retry_after),
            )
        if status >= 500:
            raise Transient(f"{self.name}: token endpoint answered {status}")
        raise PermissionDenied(
            f"{self.name}: token endpoint rejected service account {self._client_email} acting as "
            f"{self._config.subject} ({status} {error}: {description})",
            user_message="Google rejected the access bot's service account.",
        )

    # -- HTTP -----------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        base: str | None = None,
    ) -> tuple[int, Any, Any]:
        """One Directory API call (or under ``base``, another Google API); a 401 refreshes the token once.
        Returns (status, json, headers)."""
        for attempt in (1, 2):
            token = await self._access_token(force=attempt == 2)
            status, data, headers = await exchange(
                self._http(), method, (base or self._api) + path, name=self.name, path=path, params=params, json=body,
                headers={"Authorization": f"Bearer {token}"}, timeout=self._timeout)
            log.debug("%s: %s %s -> %s", self.name, method, path, status)
            if status != 401 or attempt == 2:
                return status, data, headers
        raise AssertionError("unreachable")

    def _error(self, status: int, data: Any, headers: Any, what: str) -> ConnectorError:
        reason, message = _google_error(data)
        return error_for_status(status, f"{self.name}: {what}: {status} {reason} {message}".rstrip(),
                                provider="Google Workspace", subject="user or group",
                                retry_after=retry_after_seconds(headers, self._config.default_retry_after),
                                rate_limited=status == 403 and reason in RATE_LIMIT_REASONS)

    @staticmethod
    def _group(target: Target | str) -> str:
        target = parse_target_ref(target) if isinstance(target, str) else target
        if target.kind is not TargetKind.GROUP:
            raise ConfigError(f"Google Workspace grants groups, not {target.kind.value}s ({target})")
        return quote(target.id, safe="@")

    # -- the protocol -----------------------------------------------------------------------------

    async def check(self, usage: Usage = READ_ONLY) -> list[Check]:
        """The token, each scope delegated, ending sessions and reading users (``google_check.check``)."""
        return await google_check.check(self, usage)

    async def _get_user(self, user_key: str, *, missing_ok: bool = True) -> IdpUser | None:
        status, data, headers = await self._call("GET", f"/users/{quote(user_key, safe='@')}")
        if status == 404 and missing_ok:
            return None
        if status != 200 or not isinstance(data, dict):
            raise self._error(status, data, headers, "users.get")
        name = data["name"] if isinstance(data.get("name"), dict) else {}
        return IdpUser(
            id=str(data["id"]),
            email=str(data.get("primaryEmail", user_key)).lower(),
            display_name=str(name.get("fullName", "")),
            # users.get: ``suspended`` and ``archived`` (the Directory API's User resource)
            active=not data.get("suspended") and not data.get("archived"),
        )

    async def find_user(self, email: str) -> IdpUser | None:
        return await self._get_user(email.strip().lower())

    async def _members(self, group: str, *, derived: bool) -> list[dict[str, Any]]:
        """Every page of ``members.list``: direct members (users and groups), or with ``derived`` also
        the members of nested groups."""
        path = f"/groups/{self._group(group)}/members"
        members: list[dict[str, Any]] = []
        page_token: str | None = None
        while True:
            params = {"maxResults": str(self._config.page_size)}
            if derived:
                params["includeDerivedMembership"] = "true"
            if page_token:
                params["pageToken"] = page_token
            status, data, headers = await self._call("GET", path, params=params)
            if status != 200 or not isinstance(data, dict):
                raise self._error(status, data, headers, "members.list")
            members.extend(m for m in data.get("members", []) if isinstance(m, dict))
            page_token = data.get("nextPageToken")
            if not page_token:
                return members

    async def list_members(self, group: str) -> list[IdpUser]:
        """The group's users, direct and through nested groups (``direct`` False). One listing when the
        group has no group among its members, else a second one with ``includeDerivedMembership``."""
        direct = await self._members(group, derived=False)
        users = [m for m in direct if m.get("type", "USER") == "USER"]
        if len(users) == len(direct):
            return [IdpUser(id=str(m["id"]), email=str(m.get("email", "")).lower(), active=_active(m)) for m in users]
        direct_ids = {str(m["id"]) for m in users}
        out: list[IdpUser] = []
        seen: set[str] = set()
        for m in await self._members(group, derived=True):
            uid = str(m["id"])
            if m.get("type", "USER") != "USER" or uid in seen:
                continue
            seen.add(uid)
            out.append(IdpUser(id=uid, email=str(m.get("email", "")).lower(), direct=uid in direct_ids,
                               active=_active(m)))
        return out

    async def grant(
        self, user: IdpUser, target: Target, *, grant_id: str, expires_at: datetime
    ) -> GrantResult:
        body = {"email": user.email, "role": "MEMBER"} if user.email else {"id": user.id, "role": "MEMBER"}
        status, data, headers = await self._call("POST", f"/groups/{self._group(target)}/members", body=body)
        if status == 409:  # "Member already exists", reason "duplicate"
            return GrantResult(added=False)
        if status not in (200, 201):
            raise self._error(status, data, headers, "members.insert")
        return GrantResult(added=True, detail={"member_id": str((data or {}).get("id", user.id))})

    async def revoke(self, user: IdpUser, target: Target, *, grant_id: str) -> None:
        """Remove the user's direct membership. No direct membership (404) is success only when the user
        does not hold the group through a nested one either (``members.hasMember``): else
        ``IndirectMembership``, because ``members.delete`` cannot end a nested membership."""
        member = quote(user.id or user.email, safe="@")
        status, data, headers = await self._call("DELETE", f"/groups/{self._group(target)}/members/{member}")
        if status in (200, 204):
            return
        if status != 404:
            raise self._error(status, data, headers, "members.delete")
        try:
            nested = await self.is_member(user, target)
        except NotFound:  # the group is gone: nobody holds it
            return
        except ConnectorError as exc:
            # hasMember answers 400 "Invalid input" for a member it cannot check (another domain, or an
            # account that is gone): a deleted account holds nothing, anything else is not known
            if type(exc) is ConnectorError and await self._get_user(user.id or user.email) is None:
                return
            raise
        if nested:
            raise IndirectMembership(
                f"{self.name}: {user.email or user.id} is not a direct member of {target.id} but still holds "
                "it through a nested group; members.delete removes direct memberships only",
                user_message=f"{user.email or user.id} holds {target.id} through a nested group, which jitbot "
                             "does not change: remove them from that group in the Admin console.")

    async def is_member(self, user: IdpUser, target: Target) -> bool:
        member = quote(user.id or user.email, safe="@")
        status, data, headers = await self._call("GET", f"/groups/{self._group(target)}/hasMember/{member}")
        if status != 200 or not isinstance(data, dict):
            raise self._error(status, data, headers, "members.hasMember")
        return bool(data.get("isMember"))

    async def terminate_sessions(self, user: IdpUser) -> None:
        """users.signOut: end the user's web and device sessions (needs ``terminate_sessions: true``)."""
        if not self._config.terminate_sessions:
            raise ConfigError(f"{self.name}: terminate_sessions is not enabled for this connector")
        status, data, headers = await self._call(
            "POST", f"/users/{quote(user.id or user.email, safe='@')}/signOut"
        )
        if status not in (200, 204):
            raise self._error(status, data, headers, "users.signOut")

    async def aclose(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None


def from_settings(name: str, settings: dict[str, Any]) -> GoogleWorkspaceConnector:
    """Build the connector from its policy settings."""
    config = validate_settings(GoogleWorkspaceConfig, settings, label=f"connector {name!r}")
    if config.expiry_backstop:  # never a connector that silently lacks it
        raise ConfigError(f"connector {name!r}: expiry_backstop is built by connectors.google_expiry.from_settings")
    return GoogleWorkspaceConnector(name, config)


def _active(member: dict[str, Any]) -> bool:
    """A member row's ``status`` (members.list): a SUSPENDED or ARCHIVED user counts in no group."""
    return str(member.get("status", "ACTIVE")).upper() not in ("SUSPENDED", "ARCHIVED")
