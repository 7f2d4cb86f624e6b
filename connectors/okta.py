"""Okta connector, built on the official ``okta`` SDK (async).

Choices worth knowing:

* Our ``ResilientConnector`` owns retries and pacing, so the SDK's own 429 retry is off
  (``rateLimit.maxRetries = 0``) and its response cache is off (membership must be read fresh).
* In API-token mode the SDK sends ``Authorization: SSWS<token>`` (no space); Okta documents
  ``SSWS <token>``. A thin ``HTTPClient`` subclass sets the documented header on every request.
* The SDK returns errors instead of raising, in 2- or 3-tuples, and raises ``AttributeError`` when
  the connection is refused: every call goes through ``_call``, which turns both into typed errors.
* 429 → ``RateLimited`` with ``X-Rate-Limit-Reset`` (epoch seconds) minus the response's ``Date``.
* User search returns users in every status, DEPROVISIONED included (Okta's List Users: ``search``
  covers all statuses, unlike ``q``/``filter``). ``find_user`` prefers an account that is not
  deprovisioned, and ``grant`` reads the account's status afresh and refuses a SUSPENDED or
  DEPROVISIONED one with ``AccountInactive`` (``okta.models.user_status.UserStatus``). Every user it
  reads (``find_user``, ``list_members``: both carry ``status``) is marked ``active=False`` when SUSPENDED
  or DEPROVISIONED, so such an account counts in no group (requestors, approvers, admins). Other
  statuses (STAGED, PROVISIONED, ACTIVE, RECOVERY, LOCKED_OUT, PASSWORD_EXPIRED) are accounts of
  people still employed, mid sign-in trouble or onboarding: active.
* OAuth mode uses DPoP (RFC 9449) unless ``dpop: false``: new API Services apps require it by default
  and refuse a token request without a proof (``invalid_dpop_proof``). The SDK does the work since
  3.4.0 (``dpopEnabled``; okta-sdk-python PR 495, ``okta/dpop.py`` and ``okta/oauth.py``): an RSA key
  of its own, a proof on the token request, the ``use_dpop_nonce`` retry, ``Authorization: DPoP`` and a
  proof with ``ath`` on every API call.
* Ending sessions sends ``oauthTokens=true``: without it Okta ends the IdP sessions and leaves the
  OpenID Connect / OAuth refresh and access tokens it issued alive (the SDK's ``revoke_user_sessions``
  docstring, from Okta's management OpenAPI).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal, NoReturn

import aiohttp
from okta.client import Client
from okta.http_client import HTTPClient
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from connectors import okta_check
from connectors.base import (
    READ_ONLY,
    AccountInactive,
    Check,
    ConfigError,
    ConnectorError,
    GrantResult,
    GroupInfo,
    IdpUser,
    NotFound,
    PermissionDenied,
    RateLimited,
    SignIn,
    Target,
    Transient,
    Usage,
)
from connectors.okta_limits import report_budget_of as _report_budget
from connectors.okta_limits import retry_after as _retry_after
from connectors.okta_logs import iso as _iso
from connectors.okta_logs import next_cursor as _next_cursor
from connectors.okta_logs import sign_in as _sign_in
from connectors.rest import validate_settings

log = logging.getLogger(__name__)

_GROUP_ID = re.compile(r"00g[0-9A-Za-z]{17}")
MAX_LOG_PAGES = 50  # per poll; the cursor keeps the rest for the next one
# never granted to, and in no group for jitbot (okta.models.user_status)
INACTIVE = frozenset({"SUSPENDED", "DEPROVISIONED"})


class OktaSettings(BaseModel):
    """``type: okta`` in the policy. Either ``api_token`` or ``client_id`` + ``private_key``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["okta"] = "okta"
    org_url: str = Field(pattern=r"^https://[^/]+$")
    api_token: SecretStr | None = None
    client_id: str | None = None
    private_key: SecretStr | None = None  # PEM or JWK (JSON) of the service app's key
    key_id: str | None = None
    scopes: list[str] = Field(default_factory=lambda: ["okta.groups.manage", "okta.users.read"])
    dpop: bool = True  # OAuth mode: DPoP-bound tokens; false only for an app that does not require DPoP
    timeout: float = Field(default=15.0, gt=0)
    page_size: int = Field(default=200, ge=1, le=1000)
    ca_file: str | None = None  # extra CA bundle (private CA, TLS-inspecting proxy, tests)

    @model_validator(mode="after")
    def _one_auth_mode(self) -> OktaSettings:
        oauth = self.client_id is not None or self.private_key is not None
        if self.api_token is not None and oauth:
            raise ValueError("set either api_token or client_id + private_key, not both")
        if self.api_token is None and not (self.client_id and self.private_key):
            raise ValueError("set api_token, or client_id and private_key (OAuth 2.0 private-key JWT)")
        return self


def _http_client_class(authorization: SecretStr | None) -> type[Any]:
    class DocumentedAuthHttpClient(HTTPClient):
        async def send_request(self, request: dict[str, Any]) -> Any:
            if authorization is not None:
                request["headers"]["Authorization"] = authorization.get_secret_value()
            return await super().send_request(request)  # type: ignore[no-untyped-call]

    return DocumentedAuthHttpClient


class OktaConnector:
    """Group membership in one Okta org."""

    def __init__(self, name: str, settings: OktaSettings) -> None:
        self.name = name
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._group_ids: dict[str, str] = {}
        config: dict[str, Any] = {
            "orgUrl": settings.org_url,
            "requestTimeout": settings.timeout,
            "rateLimit": {"maxRetries": 0},
            "cache": {"enabled": False},
            "logging": {"enabled": False},
        }
        header: SecretStr | None = None
        if settings.api_token is not None:
            config |= {"authorizationMode": "SSWS", "token": settings.api_token.get_secret_value()}
            header = SecretStr(f"SSWS {settings.api_token.get_secret_value()}")
        else:
            assert settings.private_key is not None
            config |= {"authorizationMode": "PrivateKey", "clientId": settings.client_id,
                       "scopes": settings.scopes, "privateKey": settings.private_key.get_secret_value(),
                       "dpopEnabled": settings.dpop}
            if settings.key_id:
                config["kid"] = settings.key_id
        config["httpClient"] = _http_client_class(header)
        try:
            # With DPoP the SDK makes an RSA-3072 key in Client() (seconds of CPU): validate the settings
            # with a client without it now, and build the real one off the event loop at first use.
            self._client = Client({**config, "dpopEnabled": False})
        except ValueError as exc:
            # The SDK's validation messages name fields, never their values.
            raise ConfigError(f"okta {name}: {exc}") from None
        self._dpop_config = config if config.get("dpopEnabled") else None
        self._client_lock = asyncio.Lock()

    async def _ensure_session(self) -> None:
        if self._dpop_config is not None:
            async with self._client_lock:
                if self._dpop_config is not None:
                    self._client = await asyncio.to_thread(Client, self._dpop_config)
                    self._dpop_config = None
        if self._session is None:
            context = ssl.create_default_context(cafile=self._settings.ca_file)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=context),
                timeout=aiohttp.ClientTimeout(total=self._settings.timeout))
            self._client.get_request_executor().set_session(self._session)  # type: ignore[no-untyped-call]

    def _sdk(self, method: str, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        """The SDK client's ``method`` called: looked up at call time, once ``_ensure_session`` made the client."""
        return getattr(self._client, method)(*args, **kwargs)  # type: ignore[no-any-return]

    async def _call(self, what: str, fn: Callable[[], Awaitable[Any]]) -> tuple[Any, Any]:
        """Run one SDK call; return ``(data, ApiResponse)`` or raise a typed error."""
        await self._ensure_session()
        try:
            result = await fn()
        except (AttributeError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Transient(f"okta {self.name}: {what}: cannot reach {self._settings.org_url} "
                            f"({type(exc).__name__})",
                            user_message="Okta could not be reached; the bot will try again.") from None
        error = result[-1]
        if error is not None:
            self._raise(what, error)
        for part in result[:-1]:  # the ApiResponse: Okta states its rate-limit budget on every answer
            headers = getattr(part, "headers", None)  # okta 3.x ApiResponse; 2.x had get_headers()
            if headers is None and hasattr(part, "get_headers"):
                headers = part.get_headers()
            if headers is not None:
                _report_budget(headers)
        return result[0], result[1]

    def _raise(self, what: str, error: Exception) -> NoReturn:
        status = getattr(error, "status", None)
        prefix = f"okta {self.name}: {what}"
        if status is None:
            raise Transient(f"{prefix}: {type(error).__name__}",
                            user_message="Okta could not be reached; the bot will try again.")
        detail = (f"{prefix}: HTTP {status} {getattr(error, 'error_code', '')} "
                  f"{getattr(error, 'error_summary', '')}".rstrip())
        if status == 429:
            headers = getattr(error, "headers", None) or getattr(error, "response_headers", None) or {}
            raise RateLimited(detail, retry_after=_retry_after(headers),
                              user_message="Okta is rate limiting the bot; it will try again shortly.")
        if status == 401:
            raise PermissionDenied(detail, user_message="Okta rejected the connector's credentials.")
        if status == 403:
            raise PermissionDenied(detail, user_message="The Okta connector lacks a permission.")
        if status == 404:
            raise NotFound(detail, user_message="Okta does not know this user or group.")
        if status >= 500 or status == 408:
            raise Transient(detail, user_message="Okta is having trouble; the bot will try again.")
        raise ConnectorError(detail)

    # -- lookups -----------------------------------------------------------------------------
    async def find_user(self, email: str) -> IdpUser | None:
        """The user whose login or primary email is ``email`` (case-insensitive), or None."""
        if not email or any(c in email for c in '"\\'):
            return None
        search = f'profile.login eq "{email}" or profile.email eq "{email}"'
        users, _ = await self._call("find user", lambda: self._client.list_users(search=search, limit=10))
        wanted = email.lower()
        # an exact email first, and among those an account that is not deprovisioned: a reused address may
        # still name an old, deactivated account next to the person's current one
        ranked = sorted(users or [], key=lambda u: (_to_user(u).email.lower() != wanted,
                                                    _status(u) == "DEPROVISIONED"))
        return _to_user(ranked[0]) if ranked else None

    async def _group_id(self, ref: str) -> str:
        if _GROUP_ID.fullmatch(ref):
            return ref
        if ref not in self._group_ids:
            if '"' in ref or "\\" in ref:
                raise NotFound(f"okta {self.name}: no group named {ref!r}")
            search = f'profile.name eq "{ref}"'
            groups, _ = await self._call("find group", lambda: self._client.list_groups(search=search))
            ids = [g.id for g in groups or [] if _group_name(g) == ref]
            if len(ids) != 1:
                raise NotFound(f"okta {self.name}: {len(ids)} groups named {ref!r}",
                               user_message=f"Okta has no single group named {ref}.")
            self._group_ids[ref] = ids[0]
        return self._group_ids[ref]

    async def list_members(self, group: str) -> list[IdpUser]:
        """Every member of ``group`` (id or exact name), following ``rel="next"`` links."""
        gid = await self._group_id(group)
        members: list[IdpUser] = []
        after: str | None = None
        while True:
            users, response = await self._call("list group members", functools.partial(
                self._sdk, "list_group_users", gid, after=after, limit=self._settings.page_size))
            members.extend(_to_user(u) for u in users or [])
            after = _next_cursor(getattr(response, "headers", None) or {})
            if not after:
                return members

    async def list_groups(self) -> list[GroupInfo]:
        """Every group in the org, paged, with ``expand=stats`` for its member count (``usersCount``)."""
        groups: list[GroupInfo] = []
        after: str | None = None
        while True:
            page, response = await self._call("list groups", functools.partial(
                self._sdk, "list_groups", after=after, limit=self._settings.page_size, expand="stats"))
            for g in page or []:
                stats = getattr(getattr(g, "embedded", None), "stats", None)
                count = getattr(stats, "users_count", None)
                groups.append(GroupInfo(id=g.id, name=_group_name(g) or g.id,
                                        member_count=count if isinstance(count, int) else None))
            after = _next_cursor(getattr(response, "headers", None) or {})
            if not after:
                return groups

    async def groups_of(self, user: IdpUser, among: Sequence[str]) -> frozenset[str] | None:
        """Which of ``among`` (group names or ids) the user is in, from the user's groups
        (``GET /api/v1/users/{id}/groups``: one read of the user, whatever the groups' sizes). Each ref is
        resolved as ``list_members`` resolves it (an id stays an id; a name must name exactly one group)
        and matched by id only: another group carrying the same name — or named like an id — counts for
        nothing."""
        ids: dict[str, list[str]] = {}
        for ref in among:
            try:
                ids.setdefault(await self._group_id(ref), []).append(ref)
            except NotFound:
                continue  # no single group of that name: nobody is in it
        groups, more = await self._user_groups(user)
        if more:
            return None
        return frozenset(ref for g in groups for ref in ids.get(g.id, []))

    async def _user_groups(self, user: IdpUser) -> tuple[list[Any], bool]:
        """The user's groups (``GET /api/v1/users/{id}/groups``) and whether the answer said there is more."""
        groups, response = await self._call("list user groups", lambda: self._client.list_user_groups(user.id))
        return list(groups or []), _next_cursor(getattr(response, "headers", None) or {}) is not None

    async def is_member(self, user: IdpUser, target: Target) -> bool:
        """Whether ``user`` is in the group now, read from the user's groups (Okta has no pair lookup)."""
        gid = await self._group_id(target.id)
        groups, more = await self._user_groups(user)
        if any(g.id == gid for g in groups):
            return True
        if more:
            # Okta's management OpenAPI declares no paging for a user's groups (no after/limit): should an
            # answer carry a next link all the same, the SDK cannot follow it, so read the group instead.
            return any(m.id == user.id for m in await self.list_members(gid))
        return False

    # -- changes -----------------------------------------------------------------------------
    async def grant(
        self, user: IdpUser, target: Target, *, grant_id: str, expires_at: datetime
    ) -> GrantResult:
        """Add ``user`` to the group; ``added=False`` when they already were a member. A suspended or
        deprovisioned account (read now, not from a cache) is refused with ``AccountInactive``."""
        gid = await self._group_id(target.id)
        account, _ = await self._call("read user", lambda: self._client.get_user(user.id))
        status = _status(account)
        if status in INACTIVE:
            state = "suspended" if status == "SUSPENDED" else "deactivated (deprovisioned)"
            raise AccountInactive(f"okta {self.name}: user {user.id} is {status}; not granting",
                                  user_message=f"Your Okta account is {state}, and access is never granted "
                                               "to such an account. Ask your Okta administrator about it.")
        if await self.is_member(user, target):
            return GrantResult(added=False, detail={"group_id": gid})
        await self._call("add group member", lambda: self._client.assign_user_to_group(gid, user.id))
        log.info("okta %s: added %s to group %s (grant %s)", self.name, user.id, gid, grant_id)
        return GrantResult(added=True, detail={"group_id": gid})

    async def revoke(self, user: IdpUser, target: Target, *, grant_id: str) -> None:
        """Remove ``user`` from the group; a missing user or group counts as removed."""
        try:
            gid = await self._group_id(target.id)
            await self._call("remove group member",
                             lambda: self._client.unassign_user_from_group(gid, user.id))
        except NotFound as exc:
            log.warning("okta %s: revoke %s treated as done: %s", self.name, grant_id, exc)
            return
        log.info("okta %s: removed %s from group %s (grant %s)", self.name, user.id, gid, grant_id)

    async def terminate_sessions(self, user: IdpUser) -> None:
        """End the user's Okta sessions and the OAuth / OpenID Connect tokens Okta issued to them
        (``oauthTokens=true``; needs ``okta.users.manage`` in OAuth mode)."""
        await self._call("revoke sessions", lambda: self._client.revoke_user_sessions(user.id, oauth_tokens=True))

    async def sign_ins(self, account: str, cursor: str | None, *, start: datetime) -> tuple[list[SignIn], str]:
        """``user.session.start`` events of ``account`` from the System Log: a polling query (``since``, no
        ``until``), paged by ``rel="next"``; an empty page ends it. The cursor keeps the last ``after``."""
        if not account or any(c in account for c in '"\\'):
            raise ConfigError(f"okta {self.name}: invalid account {account!r}")
        state: dict[str, str] = json.loads(cursor) if cursor else {"since": _iso(start)}
        query = f'eventType eq "user.session.start" and actor.alternateId eq "{account}"'
        found: list[SignIn] = []
        for _ in range(MAX_LOG_PAGES):
            events, response = await self._call("read system log", functools.partial(
                self._sdk, "list_log_events", since=state["since"], after=state.get("after"), filter=query,
                limit=self._settings.page_size))
            found.extend(_sign_in(e, account) for e in events or [])
            after = _next_cursor(getattr(response, "headers", None) or {})
            if after:
                state["after"] = after
            elif found:  # a bounded answer (no next link): continue after the last event next time
                state = {"since": _iso(found[-1].at + timedelta(milliseconds=1))}
            if not events or not after:
                break
        return found, json.dumps(state)

    # -- health ------------------------------------------------------------------------------
    async def check(self, usage: Usage = READ_ONLY) -> list[Check]:
        """Credentials, reachability and the permissions ``usage`` needs (``okta_check.check``)."""
        return await okta_check.check(self, usage)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _to_user(user: Any) -> IdpUser:
    profile = user.profile
    name = " ".join(p for p in (profile.first_name, profile.last_name) if p)
    return IdpUser(id=user.id, email=profile.email or profile.login or "", display_name=name,
                   active=_status(user) not in INACTIVE)


def _status(user: Any) -> str:
    status = getattr(user, "status", None)
    return str(getattr(status, "value", status) or "")


def _group_name(group: Any) -> str | None:
    profile = getattr(group, "profile", None)
    profile = getattr(profile, "actual_instance", None) or profile
    name = getattr(profile, "name", None)
    return name if isinstance(name, str) else None


def from_settings(name: str, settings: dict[str, Any]) -> OktaConnector:
    """Build an Okta connector from its policy settings (validated; secrets kept as ``SecretStr``)."""
    parsed = validate_settings(OktaSettings, settings, label=f"okta connector {name!r}")
    return OktaConnector(name, parsed)
