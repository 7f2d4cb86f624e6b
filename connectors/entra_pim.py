"""Entra ID with the IdP-side expiry backstop (connectors/backstop.py): ``expiry_backstop: true``.

Group membership through PIM for Groups (Microsoft Graph v1.0, "Create assignmentScheduleRequest":
``POST /identityGovernance/privilegedAccess/group/assignmentScheduleRequests``, application permission
``PrivilegedAssignmentSchedule.ReadWrite.AzureADGroup``; it needs Microsoft Entra ID P2 or Entra ID
Governance in the tenant, and the group onboarded to PIM):

- grant: a member already (standing access, read from the group's members) is left as it is; otherwise an
  ``adminAssign`` request for ``accessId: member`` with ``scheduleInfo.expiration {type: afterDateTime,
  endDateTime}``: the membership and its end in one call. Entra removes the member at ``endDateTime``;
- extension: ``adminUpdate`` of the assignment with the new ``endDateTime``;
- revoke: ``adminRemove`` of the assignment, then the plain ``DELETE members/$ref`` (404 is success), so a
  membership added before the backstop was turned on is removed too;
- ``check`` probes the permission with a read of the requests
  (``GET .../assignmentScheduleRequests?$filter=principalId eq '…'``; ``PrivilegedAssignmentSchedule.Read``
  or ``.ReadWrite.AzureADGroup``) and reads the write permission from the token's ``roles``.

Assumption (Graph documents the error codes loosely): an ``adminAssign`` for an existing active assignment
answers 400 ``RoleAssignmentExists``; an ``adminUpdate`` / ``adminRemove`` without one, 400 (or 404)
``RoleAssignmentDoesNotExist``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from connectors.base import (
    READ_ONLY,
    Check,
    ConnectorError,
    GrantResult,
    IdpUser,
    NotFound,
    PermissionDenied,
    Target,
    Usage,
    named,
)
from connectors.entra import EntraConnector, EntraSettings, _message
from connectors.entra_check import token_roles as _token_roles
from connectors.entra_logs import graph_time as _graph_time
from connectors.rest import validate_settings

REQUESTS = "/identityGovernance/privilegedAccess/group/assignmentScheduleRequests"
PIM_WRITE = "PrivilegedAssignmentSchedule.ReadWrite.AzureADGroup"
PIM_READ = ("PrivilegedAssignmentSchedule.Read.AzureADGroup", PIM_WRITE)
_NONE = "00000000-0000-0000-0000-000000000000"


class EntraPimConnector(EntraConnector):
    """The Entra connector whose grants are PIM for Groups assignments that end on their own."""

    @property
    def expiry_backstop(self) -> bool:
        return True

    async def _schedule_request(self, action: str, user: IdpUser, gid: str, *, grant_id: str,
                                expires_at: datetime | None = None) -> tuple[int, Any]:
        body: dict[str, Any] = {"accessId": "member", "principalId": user.id, "groupId": gid, "action": action,
                                "justification": f"jitbot grant {grant_id}"}
        if expires_at is not None:
            body["scheduleInfo"] = {"startDateTime": _graph_time(datetime.now(UTC)), "expiration": {
                "type": "afterDateTime", "endDateTime": _graph_time(expires_at)}}
        return await self._request("POST", self._graph + REQUESTS, f"PIM {action}", json=body)

    async def grant(self, user: IdpUser, target: Target, *, grant_id: str, expires_at: datetime) -> GrantResult:
        gid = await self._group_id(target.id)
        if await self.is_member(user, target):
            return GrantResult(added=False, detail={"group_id": gid})
        status, answer = await self._schedule_request("adminAssign", user, gid, grant_id=grant_id,
                                                      expires_at=expires_at)
        if status in (400, 404):
            if "RoleAssignmentExists" in _message(answer):
                return GrantResult(added=False, detail={"group_id": gid})
            raise ConnectorError(f"entra {self.name}: PIM adminAssign: {_message(answer)}",
                                 user_message="Microsoft Entra PIM refused the assignment.")
        return GrantResult(added=True, detail={"group_id": gid, "idp_expires_at": _graph_time(expires_at),
                                               "pim_request": str((answer or {}).get("id", ""))})

    async def move_expiry(self, user: IdpUser, target: Target, *, expires_at: datetime) -> None:
        gid = await self._group_id(target.id)
        status, answer = await self._schedule_request("adminUpdate", user, gid, grant_id="extend",
                                                      expires_at=expires_at)
        if status in (400, 404):
            if "RoleAssignmentDoesNotExist" in _message(answer):
                raise NotFound(f"entra {self.name}: no PIM assignment of {user.id} to {gid} (its expiry passed?)")
            raise ConnectorError(f"entra {self.name}: PIM adminUpdate: {_message(answer)}")

    async def revoke(self, user: IdpUser, target: Target, *, grant_id: str) -> None:
        try:
            gid = await self._group_id(target.id)
        except NotFound:
            return
        status, answer = await self._schedule_request("adminRemove", user, gid, grant_id=grant_id)
        if status in (400, 404) and "RoleAssignmentDoesNotExist" not in _message(answer):
            raise ConnectorError(f"entra {self.name}: PIM adminRemove: {_message(answer)}")
        await super().revoke(user, target, grant_id=grant_id)  # a plain membership (404: none) goes too

    async def check(self, usage: Usage = READ_ONLY) -> list[Check]:
        checks = await super().check(usage)
        if not usage.grants or not all(c.ok for c in checks):
            return checks
        try:
            token = await self._token()
            status, answer = await self._request("GET", self._graph + REQUESTS, "read PIM requests",
                                                 params={"$filter": f"principalId eq '{_NONE}'", "$top": "1"})
        except PermissionDenied:
            return [*checks, Check("entra expiry backstop", False, (
                f"PIM for Groups refused a read (403): add the application permission {PIM_WRITE} to app "
                f"{self._settings.client_id} and grant admin consent.")) ]
        roles = _token_roles(token)
        if status >= 300:
            return [*checks, Check("entra expiry backstop", False, (
                f"PIM for Groups is not available ({_message(answer)}): it needs Microsoft Entra ID P2 or "
                "Entra ID Governance in the tenant."))]
        if roles is not None and PIM_WRITE not in roles:
            return [*checks, Check("entra expiry backstop", False, (
                f"granting {named(usage.grants, 'eligibility')} through PIM needs the application permission "
                f"{PIM_WRITE}, which the app's token lacks: add it and grant admin consent."))]
        return [*checks, Check("entra expiry backstop", True, (
            f"memberships granted for {named(usage.grants, 'eligibility')} are PIM assignments that Entra ends "
            "at their expiry (each group must be onboarded to PIM for Groups)."))]


def from_settings(name: str, settings: dict[str, Any]) -> EntraConnector:
    """``type: entra``: the plain connector, or with ``expiry_backstop: true`` the PIM one."""
    parsed = validate_settings(EntraSettings, settings, label=f"entra connector {name!r}")
    return EntraPimConnector(name, parsed) if parsed.expiry_backstop else EntraConnector(name, parsed)
