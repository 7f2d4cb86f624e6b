"""``jitbot connectors check`` for Google Workspace: the service account's token, each scope delegated to it
(a refused token is asked for again scope by scope to name the missing one), ending sessions enabled on the
connector when the policy's uses need it, and reading users through the Directory API, each failure with
what to change in the Admin console or the Cloud project. Free functions taking the connector
(``connectors/google_workspace.py``), whose ``check`` method calls ``check`` here.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.base import READ_ONLY, Check, ConnectorError, PermissionDenied, Transient, Usage, named
from connectors.google_scopes import SCOPE_USER_SECURITY

if TYPE_CHECKING:
    from connectors.google_workspace import GoogleWorkspaceConnector


async def check(self: GoogleWorkspaceConnector, usage: Usage = READ_ONLY) -> list[Check]:
    """The token (each scope delegated: a refused token is asked for again scope by scope to name the
    missing one), ending sessions enabled when ``usage`` needs it, and reading users."""
    checks = [
        Check("config", True, f"service account {self._client_email} acting as {self._config.subject}")
    ]
    if usage.sessions and not self._config.terminate_sessions:
        checks.append(Check("google sessions", False, (
            f"terminate_sessions on {named(usage.sessions, 'eligibility')} needs terminate_sessions: true on "
            f"the connector: set it, and delegate the scope {SCOPE_USER_SECURITY} "
            f"to client ID {self._client_id} (Admin console > Security > Access and data control > "
            "API controls > Domain-wide delegation).")))
    try:
        await self._access_token(force=True)
    except Transient as exc:
        return [
            *checks,
            Check(
                "reachable",
                False,
                f"Cannot reach the Google token endpoint "
                f"{self._token_uri}: {exc}. Check network, proxy and "
                "token_uri.",
            ),
        ]
    except ConnectorError as exc:
        missing = await undelegated(self)
        if missing:
            return [*checks, *(Check(f"google scope {scope}", False, (
                f"Google refuses a token with the scope {scope}: in the Admin console > Security > Access "
                "and data control > API controls > Domain-wide delegation, add it to client ID "
                f"{self._client_id}.")) for scope in missing)]
        scopes = ",".join(self._scopes)
        return [
            *checks,
            Check(
                "credentials",
                False,
                f"Google refused a token: {exc}. In the Admin console "
                "(Security > API controls > Domain-wide delegation) authorize this service "
                f"account's client ID for the scopes {scopes}, and check that subject is an "
                "active admin.",
            ),
        ]
    checks.append(Check("credentials", True, "token issued"))
    try:
        await self._get_user(self._config.subject, missing_ok=False)
    except PermissionDenied as exc:
        checks.append(
            Check(
                "permissions",
                False,
                f"Directory API refused to read users: {exc}. Enable the "
                "Admin SDK API in the Cloud project and give the subject an admin role that "
                "can read users and manage groups.",
            )
        )
    except ConnectorError as exc:
        checks.append(
            Check(
                "directory",
                False,
                f"Directory API call failed: {exc}. Check api_base_url "
                "and that subject is a user of the domain.",
            )
        )
    else:
        checks.append(Check("directory", True, "can read users"))
    return checks


async def undelegated(self: GoogleWorkspaceConnector) -> list[str]:
    """The scopes Google refuses one at a time: those not delegated to the service account. When it
    refuses every one, the key or the subject is at fault, not a scope: nothing is returned."""
    refused = []
    for scope in self._scopes:
        try:
            await self._request_token([scope])
        except PermissionDenied:
            refused.append(scope)
    return refused if len(refused) < len(self._scopes) else []

