"""``jitbot connectors check`` for Microsoft Entra ID: the token, reachability, and the Microsoft Graph
application permissions the policy's uses need, each failure with what to change in the Entra admin center.
Reading users and groups is probed with a read call each; the other permissions are read from the access
token's ``roles`` claim (the application permissions consented to the app; its payload read, not verified),
and reading sign-in logs is probed too. Free functions taking the connector (``connectors/entra.py``), whose
``check`` method calls ``check`` here; ``connectors/entra_pim.py`` reads the token's roles with ``token_roles``.
"""
from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from connectors.base import READ_ONLY, Check, ConnectorError, PermissionDenied, Usage, named
from connectors.entra_logs import graph_time

if TYPE_CHECKING:
    from connectors.entra import EntraConnector


async def check(self: EntraConnector, usage: Usage = READ_ONLY) -> list[Check]:
    """Token, reachability and the Graph permissions ``usage`` needs, each with a message a person can
    act on. Reading users and groups is probed with a read call each; the other permissions are read
    from the token's ``roles`` claim (the application permissions consented to the app), and reading
    sign-ins is probed too (it also needs an Entra ID P1/P2 licence)."""
    s = self._settings
    checks = [Check("config", True, f"tenant {s.tenant_id}, app {s.client_id}")]
    try:
        token = await self._token()
    except PermissionDenied as exc:
        kind = "client secret" if s.client_secret is not None else "certificate"
        return [*checks, Check("entra token", False, (
            f"Microsoft Entra rejected the app's {kind} ({exc}). In the Entra admin center > "
            f"App registrations > {s.client_id} > Certificates & secrets, create a new {kind} "
            "and update the connector; check tenant_id and client_id too."))]
    except ConnectorError as exc:
        return [*checks, Check("entra token", False,
                               f"Cannot get a token from {s.authority_url} ({exc}): check authority_url, "
                               "tenant_id, DNS, the firewall and the proxy.")]
    checks.append(Check("entra token", True, "token acquired"))
    # One read-only probe per permission (Graph's permission tables): GET /groups needs GroupMember.Read.All
    # (GroupMember.ReadWrite.All does not cover it); GET /users needs User.Read.All.
    for label, permission, url in (("groups", "GroupMember.Read.All", f"{self._graph}/groups"),
                                   ("users", "User.Read.All", f"{self._graph}/users")):
        checks.append(await _probe(self, f"graph {label}", permission, f"read {label}", url,
                                        {"$top": "1", "$select": "id"}))
    roles = token_roles(token)
    for permission, accepted, needed_by in _feature_permissions(usage):
        if roles is not None and roles.isdisjoint(accepted):
            checks.append(Check(f"graph {permission}", False, (
                f"{needed_by} needs the Microsoft Graph application permission {permission}, which the "
                f"app's token lacks: in the Entra admin center > App registrations > {s.client_id} > API "
                f"permissions, add {permission} (Application) and grant admin consent.")))
        elif permission == "AuditLog.Read.All":
            account = usage.sign_ins[0].replace("'", "''")
            since = graph_time(datetime.now(UTC) - timedelta(minutes=5))
            checks.append(await _probe(self, 
                f"graph {permission}", permission, "read sign-in logs", f"{self._graph}/auditLogs/signIns",
                {"$filter": f"userPrincipalName eq '{account}' and createdDateTime ge {since}", "$top": "1"},
                hint=" (reading sign-in logs also needs an Entra ID P1 or P2 licence in the tenant)"))
        elif roles is None:
            checks.append(Check(f"graph {permission}", True, "unchecked: the token has no readable roles claim"))
        else:
            checks.append(Check(f"graph {permission}", True, "granted (the token's roles)"))
    return checks


async def _probe(self: EntraConnector, name: str, permission: str, what: str, url: str, params: dict[str, str],
                 hint: str = "") -> Check:
    """One read-only Graph call standing for ``permission``."""
    try:
        await self._request("GET", url, what, params=params)
    except PermissionDenied:
        return Check(name, False, f"Graph refused to {what} (403): add the application permission "
                                  f"{permission} to app {self._settings.client_id} and grant admin consent"
                                  f"{hint}.")
    except ConnectorError as exc:
        return Check(name, False, f"Cannot reach Graph at {self._settings.graph_url}: {exc}")
    return Check(name, True, f"can {what}")


# The application permissions (token ``roles``) each use needs beyond reading users and groups, any one of
# which will do, least privileged first (Graph's permission tables; the same sources as the module docstring).
_MEMBER_WRITE = ("GroupMember.ReadWrite.All", "Group.ReadWrite.All", "Directory.ReadWrite.All")
_REVOKE_SESSIONS = ("User.RevokeSessions.All",)
_AUDIT_READ = ("AuditLog.Read.All",)


def _feature_permissions(usage: Usage) -> list[tuple[str, tuple[str, ...], str]]:
    """(least permission, accepted permissions, which policy entries need it) for each use in ``usage``."""
    needs: list[tuple[str, tuple[str, ...], str]] = []
    if usage.grants:
        needs.append((_MEMBER_WRITE[0], _MEMBER_WRITE, f"granting {named(usage.grants, 'eligibility')}"))
    if usage.sessions:
        needs.append((_REVOKE_SESSIONS[0], _REVOKE_SESSIONS,
                      f"terminate_sessions on {named(usage.sessions, 'eligibility')}"))
    if usage.sign_ins:
        needs.append((_AUDIT_READ[0], _AUDIT_READ,
                      f"watching the sign-ins of {named(usage.sign_ins, 'recovery account')}"))
    return needs


def token_roles(token: str) -> frozenset[str] | None:
    """The ``roles`` claim of a Graph access token (its payload read, not verified: the token came from the
    token endpoint just now); None when the token is not a readable JWT."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    roles = claims.get("roles", []) if isinstance(claims, dict) else None
    return frozenset(str(r) for r in roles) if isinstance(roles, list) else None
