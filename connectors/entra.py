"""Microsoft Entra ID connector: ``msal`` client credentials for tokens, Microsoft Graph v1.0 over aiohttp.

* Tokens: ``msal.ConfidentialClientApplication`` with a client secret or a certificate (private key
  + SHA-1 thumbprint). msal is synchronous, so it runs in ``asyncio.to_thread``; its in-memory token
  cache serves repeat calls until shortly before expiry.
* Graph: membership through ``members/$ref``. "Already a member" (400 "already exist") and
  "not a member" (404 on delete) are success. 429 (or 503) with ``Retry-After`` → ``RateLimited``.
* Both base URLs are settings, so national clouds and local fakes work alike.
* Every call is one whose documented application permission docs/deployment.md asks for (Graph's
  permission tables; microsoftgraph/msgraph-metadata ``permissions/``): users by ``GET /users``
  (``User.Read.All``), groups by name ``GET /groups`` (``GroupMember.Read.All``), members and the
  membership check by ``GET /groups/{id}/members`` (``GroupMember.Read.All`` or
  ``GroupMember.ReadWrite.All``; the members' mail and UPN need ``User.Read.All``), changes by
  ``members/$ref`` (``GroupMember.ReadWrite.All``). A user's ``memberOf`` is not read: for an app it
  needs ``Directory.Read.All``, which reads the whole directory.
* ``check`` reads the permissions a use needs without a write: the access token's ``roles`` claim lists
  the application permissions consented to the app (its payload is read, not verified; a token that is not
  a readable JWT leaves those permissions unchecked, said so), and reads stand for the read permissions
  (``connectors/entra_check.py``). Sign-in log entries are read by ``connectors/entra_logs.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote, urlparse

import aiohttp
import msal
import requests
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from connectors import entra_check
from connectors.base import (
    READ_ONLY,
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
from connectors.entra_logs import created as _created
from connectors.entra_logs import graph_time as _graph_time
from connectors.entra_logs import to_sign_in as _to_sign_in
from connectors.rest import validate_settings

log = logging.getLogger(__name__)

_GUID = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
# accountEnabled: false for a disabled account (Graph "user resource type"), which counts in no group for jitbot
_USER_FIELDS = "id,mail,userPrincipalName,displayName,accountEnabled"
_USER_TYPE = "#microsoft.graph.user"
SIGN_IN_OVERLAP = timedelta(minutes=15)  # sign-in logs can arrive late: each poll re-reads this much
_UNREACHABLE = "Microsoft Entra could not be reached; the bot will try again."


class EntraSettings(BaseModel):
    """``type: entra`` in the policy. Either ``client_secret`` or a certificate (key + thumbprint)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["entra"] = "entra"
    tenant_id: str = Field(min_length=1)
    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = None
    certificate_private_key: SecretStr | None = None  # PEM
    certificate_thumbprint: str | None = Field(default=None, pattern=r"^[0-9A-Fa-f]{40}$")  # SHA-1, hex
    authority_url: str = Field(default="https://login.microsoftonline.com", pattern=r"^https://")
    graph_url: str = Field(default="https://graph.microsoft.com/v1.0", pattern=r"^https?://")
    timeout: float = Field(default=15.0, gt=0)
    page_size: int = Field(default=100, ge=1, le=999)
    ca_file: str | None = None  # extra CA bundle (private CA, TLS-inspecting proxy, tests)
    expiry_backstop: bool = False  # grant through PIM for Groups with an expiration (connectors/entra_pim.py)

    @model_validator(mode="after")
    def _one_credential(self) -> EntraSettings:
        cert = self.certificate_private_key is not None or self.certificate_thumbprint is not None
        if self.client_secret is not None and cert:
            raise ValueError("set either client_secret or a certificate, not both")
        if self.client_secret is None and not (self.certificate_private_key and self.certificate_thumbprint):
            raise ValueError("set client_secret, or certificate_private_key and certificate_thumbprint")
        return self

    @property
    def graph_scope(self) -> str:
        url = urlparse(self.graph_url)
        return f"{url.scheme}://{url.netloc}/.default"


class _TimedSession(requests.Session):
    """msal's HTTP client: every call gets our timeout and CA (explicit ``verify`` beats the env)."""

    def __init__(self, timeout: float, ca_file: str | None) -> None:
        super().__init__()
        self._timeout = timeout
        self._verify: str | bool = ca_file or True

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs["timeout"] = self._timeout
        if self._verify is not True:
            kwargs["verify"] = self._verify
        return super().request(method, url, *args, **kwargs)


class EntraConnector:
    """Group membership in one Entra tenant."""

    def __init__(self, name: str, settings: EntraSettings) -> None:
        self.name = name
        self._settings = settings
        self._graph = settings.graph_url.rstrip("/")
        self._app: msal.ConfidentialClientApplication | None = None
        self._msal_http = _TimedSession(settings.timeout, settings.ca_file)
        self._app_lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self._group_ids: dict[str, str] = {}

    # -- tokens ------------------------------------------------------------------------------
    def _build_app(self) -> msal.ConfidentialClientApplication:
        s = self._settings
        credential: Any
        if s.client_secret is not None:
            credential = s.client_secret.get_secret_value()
        else:
            assert s.certificate_private_key is not None
            credential = {"private_key": s.certificate_private_key.get_secret_value(),
                          "thumbprint": s.certificate_thumbprint}
        return msal.ConfidentialClientApplication(
            s.client_id, client_credential=credential,
            authority=f"{s.authority_url.rstrip('/')}/{s.tenant_id}",
            instance_discovery=False, http_client=self._msal_http,
            token_cache=msal.TokenCache())

    def _acquire(self) -> dict[str, Any]:
        assert self._app is not None
        result: dict[str, Any] = self._app.acquire_token_for_client(scopes=[self._settings.graph_scope])
        return result

    async def _token(self) -> str:
        where = self._settings.authority_url
        try:
            async with self._app_lock:
                if self._app is None:
                    self._app = await asyncio.to_thread(self._build_app)
            result = await asyncio.to_thread(self._acquire)
        except requests.RequestException as exc:
            raise Transient(f"entra {self.name}: token: cannot reach {where} ({type(exc).__name__})",
                            user_message=_UNREACHABLE) from None
        except ValueError as exc:  # msal: tenant discovery failed (unknown tenant or authority)
            raise ConfigError(f"entra {self.name}: token: {str(exc)[:300]}") from None
        if "access_token" in result:
            return str(result["access_token"])
        error = str(result.get("error", "unknown_error"))
        detail = f"entra {self.name}: token: {error}: {str(result.get('error_description', ''))[:300]}"
        if error in ("invalid_client", "unauthorized_client", "invalid_request", "invalid_scope"):
            raise PermissionDenied(detail, user_message="Microsoft Entra rejected the connector's login.")
        if error in ("temporarily_unavailable", "server_error"):
            raise Transient(detail)
        raise ConnectorError(detail)

    # -- Graph -------------------------------------------------------------------------------
    async def _request(self, method: str, url: str, what: str, *, json: Any = None,
                       params: dict[str, str] | None = None) -> tuple[int, Any]:
        """One Graph call; returns ``(status, body)`` for 2xx, 400 and 404, raises typed errors otherwise."""
        if not url.startswith(self._graph):
            raise ConnectorError(f"entra {self.name}: {what}: refusing to send the token to another host")
        token = await self._token()
        if self._session is None:
            context = ssl.create_default_context(cafile=self._settings.ca_file)
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context),
                                                  timeout=aiohttp.ClientTimeout(total=self._settings.timeout))
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        try:
            async with self._session.request(method, url, headers=headers, json=json, params=params) as resp:
                body = await resp.json(content_type=None) if resp.status != 204 else None
                status, retry_after = resp.status, resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise Transient(f"entra {self.name}: {what}: {type(exc).__name__} talking to Graph",
                            user_message=_UNREACHABLE) from None
        if status < 300 or status in (400, 404):
            return status, body
        detail = f"entra {self.name}: {what}: HTTP {status} {_message(body)}"
        if status == 429 or (status == 503 and retry_after):
            raise RateLimited(detail, retry_after=_seconds(retry_after),
                              user_message="Microsoft Graph is throttling the bot; it will retry soon.")
        if status in (401, 403):
            raise PermissionDenied(detail, user_message="The Entra connector lacks a permission.")
        if status >= 500 or status == 408:
            raise Transient(detail, user_message="Microsoft Graph is having trouble; the bot will try again.")
        raise ConnectorError(detail)

    async def _get_all(self, url: str, what: str, params: dict[str, str]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        next_url: str | None = url
        query: dict[str, str] | None = params
        while next_url:
            status, body = await self._request("GET", next_url, what, params=query)
            if status == 404:
                raise NotFound(f"entra {self.name}: {what}: not found",
                               user_message="Microsoft Entra does not know this user or group.")
            if status == 400:
                raise ConnectorError(f"entra {self.name}: {what}: {_message(body)}")
            items.extend(body.get("value", []))
            next_url, query = body.get("@odata.nextLink"), None  # the link carries the whole query
        return items

    async def find_user(self, email: str) -> IdpUser | None:
        """The user whose ``mail`` or ``userPrincipalName`` is ``email`` (case-insensitive), or None."""
        if not email:
            return None
        literal = email.replace("'", "''")
        users = await self._get_all(f"{self._graph}/users", "find user", {
            "$filter": f"mail eq '{literal}' or userPrincipalName eq '{literal}'",
            "$select": _USER_FIELDS, "$top": "5"})
        matches = [_to_user(u) for u in users]
        exact = [u for u in matches if u.email.lower() == email.lower()]
        return (exact or matches)[0] if matches else None

    async def _group_id(self, ref: str) -> str:
        if _GUID.fullmatch(ref):
            return ref
        if ref not in self._group_ids:
            literal = ref.replace("'", "''")
            groups = await self._get_all(f"{self._graph}/groups", "find group", {
                "$filter": f"displayName eq '{literal}'", "$select": "id,displayName"})
            if len(groups) != 1:
                raise NotFound(f"entra {self.name}: {len(groups)} groups named {ref!r}",
                               user_message=f"Microsoft Entra has no single group named {ref}.")
            self._group_ids[ref] = str(groups[0]["id"])
        return self._group_ids[ref]

    async def list_members(self, group: str) -> list[IdpUser]:
        """Every user that is a direct member of ``group`` (id or display name), across every page."""
        gid = await self._group_id(group)
        members = await self._get_all(f"{self._graph}/groups/{quote(gid)}/members", "list group members",
                                      {"$select": _USER_FIELDS, "$top": str(self._settings.page_size)})
        return [_to_user(m) for m in members if m.get("@odata.type", _USER_TYPE) == _USER_TYPE]

    async def list_groups(self) -> list[GroupInfo]:
        """Every group in the tenant (``GET /groups``, ``$select``, ``@odata.nextLink``); no member counts."""
        groups = await self._get_all(f"{self._graph}/groups", "list groups",
                                     {"$select": "id,displayName", "$top": str(self._settings.page_size)})
        return [GroupInfo(id=str(g["id"]), name=str(g.get("displayName") or g["id"])) for g in groups]

    async def groups_of(self, user: IdpUser, among: Sequence[str]) -> frozenset[str] | None:
        """Which of ``among`` (display names or object ids) the user is in: ``POST /users/{id}/checkMemberGroups``
        with up to 20 group ids a call, whatever the groups' sizes. Its application permissions are
        ``User.Read.All`` and ``GroupMember.Read.All`` (Graph: "user: checkMemberGroups"), which the
        connector needs anyway; the user's ``memberOf`` would need ``Directory.Read.All``. The check is
        transitive: a member of a nested group counts."""
        ids: dict[str, str] = {}
        for ref in among:
            try:
                ids[await self._group_id(ref)] = ref
            except NotFound:
                continue  # no such group: nobody is in it
        held: set[str] = set()
        wanted = list(ids)
        for start in range(0, len(wanted), 20):
            url = f"{self._graph}/users/{quote(user.id)}/checkMemberGroups"
            status, answer = await self._request("POST", url, "check user groups",
                                                 json={"groupIds": wanted[start:start + 20]})
            if status == 404:
                return frozenset()
            if status == 400:
                raise ConnectorError(f"entra {self.name}: check user groups: {_message(answer)}")
            held |= {ids[g] for g in (answer or {}).get("value", []) if g in ids}
        return frozenset(held)

    async def is_member(self, user: IdpUser, target: Target) -> bool:
        """Whether ``user`` is a direct member of the group, read from the group's members (ids only).
        A JIT group holds few members, so this is one call or a few; a user's ``memberOf`` would need
        ``Directory.Read.All``."""
        gid = await self._group_id(target.id)
        members = await self._get_all(f"{self._graph}/groups/{quote(gid)}/members", "list group members",
                                      {"$select": "id", "$top": "999"})  # Graph's largest page
        return any(m.get("id") == user.id for m in members)

    async def grant(
        self, user: IdpUser, target: Target, *, grant_id: str, expires_at: datetime
    ) -> GrantResult:
        """Add ``user`` to the group; ``added=False`` when Graph says the member already exists."""
        gid = await self._group_id(target.id)
        body = {"@odata.id": f"{self._graph}/directoryObjects/{user.id}"}
        status, answer = await self._request("POST", f"{self._graph}/groups/{quote(gid)}/members/$ref",
                                             "add group member", json=body)
        if status == 404:
            raise NotFound(f"entra {self.name}: add group member: {_message(answer)}",
                           user_message="Microsoft Entra does not know this user or group.")
        if status == 400:
            if "already exist" in _message(answer):
                return GrantResult(added=False, detail={"group_id": gid})
            raise ConnectorError(f"entra {self.name}: add group member: {_message(answer)}")
        log.info("entra %s: added %s to group %s (grant %s)", self.name, user.id, gid, grant_id)
        return GrantResult(added=True, detail={"group_id": gid})

    async def revoke(self, user: IdpUser, target: Target, *, grant_id: str) -> None:
        """Remove ``user`` from the group; 404 (not a member, or gone) is success."""
        gid = await self._group_id(target.id)
        url = f"{self._graph}/groups/{quote(gid)}/members/{quote(user.id)}/$ref"
        status, answer = await self._request("DELETE", url, "remove group member")
        if status == 400:
            raise ConnectorError(f"entra {self.name}: remove group member: {_message(answer)}")
        log.info("entra %s: %s %s from group %s (grant %s)", self.name,
                 "removed" if status < 300 else "already absent:", user.id, gid, grant_id)

    async def sign_ins(self, account: str, cursor: str | None, *, start: datetime) -> tuple[list[SignIn], str]:
        """Sign-ins of ``account`` (``GET /auditLogs/signIns``, ``AuditLog.Read.All``; needs Entra ID P1/P2),
        newest first and paged by ``@odata.nextLink``. Logs arrive late, so every poll re-reads
        ``SIGN_IN_OVERLAP`` before the newest event seen and skips the ids the cursor remembers."""
        state: dict[str, Any] = json.loads(cursor) if cursor else {"since": _graph_time(start), "seen": []}
        upn = account.replace("'", "''")
        query = {"$filter": f"userPrincipalName eq '{upn}' and createdDateTime ge {state['since']}"}
        items = await self._get_all(f"{self._graph}/auditLogs/signIns", "read sign-in logs", query)
        seen = set(state["seen"])
        events = sorted((_to_sign_in(i, account) for i in items if i.get("id") not in seen), key=lambda e: e.at)
        since = datetime.fromisoformat(str(state["since"]).replace("Z", "+00:00"))
        if events:
            since = max(since, events[-1].at - SIGN_IN_OVERLAP)
        keep = [str(i["id"]) for i in items if _created(i) >= since]
        return events, json.dumps({"since": _graph_time(since), "seen": keep})

    async def terminate_sessions(self, user: IdpUser) -> None:
        """Invalidate the user's refresh tokens and session cookies (``revokeSignInSessions``; Microsoft: it
        takes a few minutes, and "doesn't revoke sign-in sessions for external users, because external users
        sign in through their home tenant"). An external (guest) user's sessions are not ended: that is said
        as an error, so it is audited and alerted, not recorded as done."""
        status, account = await self._request("GET", f"{self._graph}/users/{quote(user.id)}", "read user",
                                              params={"$select": "id,userType,userPrincipalName"})
        if status == 404:
            raise NotFound(f"entra {self.name}: revoke sessions: {_message(account)}")
        if status < 300 and isinstance(account, dict) and (
                account.get("userType") == "Guest" or "#EXT#" in str(account.get("userPrincipalName") or "")):
            raise ConnectorError(f"entra {self.name}: revoke sessions: {user.id} is an external (guest) user",
                                 user_message=f"{user.email or user.id} is an external (guest) user: Microsoft Entra "
                                              "does not end their sessions, which their home tenant holds.")
        url = f"{self._graph}/users/{quote(user.id)}/revokeSignInSessions"
        status, answer = await self._request("POST", url, "revoke sessions")
        if status == 404:
            raise NotFound(f"entra {self.name}: revoke sessions: {_message(answer)}")
        if status == 400:
            raise ConnectorError(f"entra {self.name}: revoke sessions: {_message(answer)}")

    async def check(self, usage: Usage = READ_ONLY) -> list[Check]:
        """Token, reachability and the Graph permissions ``usage`` needs (``entra_check.check``)."""
        return await entra_check.check(self, usage)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._msal_http.close()
        self._app = None


def _to_user(item: dict[str, Any]) -> IdpUser:
    return IdpUser(id=str(item["id"]), email=str(item.get("mail") or item.get("userPrincipalName") or ""),
                   display_name=str(item.get("displayName") or ""), active=item.get("accountEnabled") is not False)


def _message(body: Any) -> str:
    error = body.get("error", {}) if isinstance(body, dict) else {}
    return f"{error.get('code', '')}: {error.get('message', '')}" if isinstance(error, dict) else str(error)


def _seconds(value: str | None) -> float:
    try:
        return float(value) if value is not None else 30.0
    except ValueError:
        return 30.0  # an HTTP-date; Graph sends seconds, so keep a safe default


def from_settings(name: str, settings: dict[str, Any]) -> EntraConnector:
    """Build an Entra connector from its policy settings (validated; secrets kept as ``SecretStr``)."""
    parsed = validate_settings(EntraSettings, settings, label=f"entra connector {name!r}")
    if parsed.expiry_backstop:  # never a connector that silently lacks it
        raise ConfigError(f"entra connector {name!r}: expiry_backstop is built by connectors.entra_pim.from_settings")
    return EntraConnector(name, parsed)
