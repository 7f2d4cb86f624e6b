"""``jitbot connectors check`` for Okta: credentials (with DPoP in OAuth mode), reachability, and the
scopes or admin roles the policy's uses need, each failure with what to change in Okta."""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from connectors.base import READ_ONLY, Check, ConnectorError, PermissionDenied, Usage, named
from connectors.okta_logs import iso as _iso

if TYPE_CHECKING:
    from connectors.okta import OktaConnector


async def check(self: OktaConnector, usage: Usage = READ_ONLY) -> list[Check]:
    """Credentials (with DPoP in OAuth mode), reachability, and the permissions ``usage`` needs, each with
    an actionable message. OAuth mode: each scope a use needs is among ``scopes``, and Okta grants every
    one of them (a refused token request is retried scope by scope to name the refused one). Reading
    groups, users and (for recovery accounts) the System Log is probed with a read call each."""
    oauth = self._settings.api_token is None
    mode = "OAuth service app" if oauth else "API token"
    checks = [Check("config", True, f"{self._settings.org_url} via {mode}")]
    if oauth:
        checks += [Check(f"okta scope {scope}", False, (
            f"{needed_by} needs the scope {scope}, which the connector does not ask for: add it to the "
            f"connector's scopes and grant it to app {self._settings.client_id} (Okta Admin Console > "
            "Applications > the app > Okta API Scopes)."))
            for scope, needed_by in _needed_scopes(usage) if not _covered(scope, self._settings.scopes)]
    probes: list[tuple[str, str, Callable[[], Awaitable[Any]]]] = [
        ("groups", "okta.groups.manage", lambda: self._sdk("list_groups", limit=1)),
        ("users", "okta.users.read", lambda: self._sdk("list_users", limit=1)),
    ]
    if usage.sign_ins:
        probes.append(("system log", "okta.logs.read",
                       lambda: self._sdk("list_log_events", since=_iso(datetime.now(UTC)), limit=1)))
    for label, scope, probe in probes:
        try:
            await self._call(f"read {label}", probe)
        except PermissionDenied as exc:
            checks.append(Check(f"okta {label}", False, _denied_message(self, str(exc), scope)))
            if "HTTP 401" in str(exc):
                break
        except ConnectorError as exc:
            if "invalid_scope" in str(exc):  # a 400 from the token endpoint: a scope is not granted
                checks += await _refused_scopes(self)
            elif "invalid_dpop_proof" in str(exc):  # a 400 from the token endpoint
                checks.append(Check(f"okta {label}", False, _denied_message(self, str(exc), scope)))
            else:
                checks.append(Check(f"okta {label}", False,
                                    f"Cannot reach Okta at {self._settings.org_url}: {exc}. "
                                    "Check org_url, DNS, the firewall and the proxy."))
            break
        else:
            checks.append(Check(f"okta {label}", True, f"can read {label}"))
    if usage.sessions and not oauth:
        checks.append(Check("okta sessions", True, (
            "not probed (ending sessions has no read-only call): the API token's admin needs a role that "
            "may clear user sessions")))
    return checks

async def _refused_scopes(self: OktaConnector) -> list[Check]:
    """One failed check per configured scope that Okta refuses to grant, found by asking for a token
    with that scope alone (the SDK reads ``scopes`` from its config at each token request)."""
    oauth = self._client.get_request_executor()._oauth  # type: ignore[no-untyped-call]
    config = oauth._config["client"]
    wanted, refused = list(config["scopes"]), []
    try:
        for scope in wanted:
            config["scopes"] = [scope]
            oauth.clear_access_token()
            _, _, error = await oauth.get_oauth_token()
            if error is not None:
                refused.append(scope)
    finally:
        config["scopes"] = wanted
        oauth.clear_access_token()
    where = (f"grant it to app {self._settings.client_id} in the Okta Admin Console > Applications > the app > "
             "Okta API Scopes, or remove it from the connector's scopes")
    return [Check(f"okta scope {scope}", False, f"Okta does not grant the scope {scope}: {where}.")
            for scope in refused] or [Check("okta token", False, (
                f"Okta refused the scopes {' '.join(wanted)} together: {where}."))]

def _denied_message(self: OktaConnector, detail: str, scope: str) -> str:
    if self._settings.api_token is not None:
        if "HTTP 401" in detail:
            return ("Okta rejected the API token (401): create a new token in "
                    "Admin > Security > API > Tokens and update the connector's api_token.")
        return ("The API token's admin lacks permission (403): give that admin a role that can "
                "manage these groups (e.g. Group Administrator).")
    if "invalid_dpop_proof" in detail:
        return (f"Okta refused the token request of OAuth client {self._settings.client_id}: the app requires "
                "DPoP (Demonstrating Proof-of-Possession) and dpop is false. Remove 'dpop: false' from the "
                "connector, or clear 'Require DPoP header in token requests' in the app's settings.")
    if "HTTP 401" in detail or "invalid_client" in detail:
        return (f"Okta rejected the OAuth client {self._settings.client_id} (401): check client_id, "
                "that the app uses public key / private key authentication, and that its public "
                "key matches private_key (and key_id).")
    return (f"The OAuth service app lacks a permission (403): grant the {scope} scope under "
            "Okta API Scopes and an admin role, then retry.")


def _needed_scopes(usage: Usage) -> list[tuple[str, str]]:
    """(OAuth scope, which policy entries need it) for the uses beyond reading users and groups."""
    needs = []
    if usage.grants:
        needs.append(("okta.groups.manage", f"granting {named(usage.grants, 'eligibility')}"))
    if usage.sessions:
        needs.append(("okta.users.manage", f"terminate_sessions on {named(usage.sessions, 'eligibility')}"))
    if usage.sign_ins:
        needs.append(("okta.logs.read", f"watching the sign-ins of {named(usage.sign_ins, 'recovery account')}"))
    return needs


def _covered(scope: str, granted: Sequence[str]) -> bool:
    """Whether ``granted`` holds ``scope``; a ``.manage`` scope covers its ``.read`` (Okta's scope model)."""
    return scope in granted or (scope.endswith(".read") and scope.removesuffix(".read") + ".manage" in granted)
