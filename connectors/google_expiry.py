"""Google with the IdP-side expiry backstop (connectors/backstop.py): ``expiry_backstop: true``.

The Admin SDK Directory API (connectors/google_workspace.py) has no membership expiry. The Cloud Identity
Groups API does, on the same Google Groups (its discovery document ``cloudidentity.v1``, vendored under
tests/specs/google; Google's guide "Managing membership expirations"):

- ``groups.lookup`` (``GET /v1/groups:lookup?groupKey.id=<group email>``) names the group
  (``groups/<id>``); a backstop target is therefore named by the group's email;
- ``groups.memberships.create`` (``POST /v1/groups/<id>/memberships``) with ``preferredMemberKey.id`` =
  the user's email and ``roles: [{name: MEMBER, expiryDetail: {expireTime}}]`` adds the membership and its
  expiry in one call (a crash cannot leave one without the other); 409 ``ALREADY_EXISTS`` is a member
  already (standing access: its expiry, if any, is not touched);
- ``groups.memberships.lookup`` + ``modifyMembershipRoles`` with ``updateRolesParams: [{fieldMask:
  "expiry_detail.expire_time", membershipRole: {name: MEMBER, expiryDetail: {expireTime}}}]`` moves it.
  Only the ``MEMBER`` role carries an expiry (the ``MembershipRole`` schema).

Reads and removal stay on the Directory API (a member whose expiry passed is no longer listed, and
``members.delete`` of it is a 404, which ``revoke`` takes as done). Google documents membership expiry for
Google Workspace Enterprise Standard / Plus, Enterprise for Education and Cloud Identity Premium only;
elsewhere the create call is refused and the grant fails with Google's message (``connectors check`` says
what to look for). The scope is ``https://www.googleapis.com/auth/cloud-identity.groups``, delegated to
the service account like the Directory API's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp

from connectors.base import (
    READ_ONLY,
    Check,
    ConfigError,
    GrantResult,
    IdpUser,
    NotFound,
    Target,
    Usage,
    named,
)
from connectors.google_workspace import GoogleWorkspaceConfig, GoogleWorkspaceConnector
from connectors.rest import validate_settings

SCOPE_CLOUD_IDENTITY_GROUPS = "https://www.googleapis.com/auth/cloud-identity.groups"
EXPIRY_FIELD_MASK = "expiry_detail.expire_time"


def rfc3339(at: datetime) -> str:
    """``expireTime`` as Google's ``google-datetime``: RFC 3339 in UTC, ``Z``."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class GoogleExpiryConnector(GoogleWorkspaceConnector):
    """The Google Workspace connector whose grants carry a Cloud Identity membership expiry."""

    def __init__(self, name: str, config: GoogleWorkspaceConfig,
                 session: aiohttp.ClientSession | None = None) -> None:
        super().__init__(name, config, session)
        self._scopes.append(SCOPE_CLOUD_IDENTITY_GROUPS)
        self._ci = config.cloud_identity_base_url.rstrip("/") + "/v1"
        self._group_names: dict[str, str] = {}  # group email → groups/<id>

    @property
    def expiry_backstop(self) -> bool:
        return True

    async def _group_name(self, target: Target) -> str:
        group = self._group(target)  # a group, not a role
        if "@" not in target.id:
            raise ConfigError(f"{self.name}: with expiry_backstop, name the group by its email, not {target.id!r} "
                              "(the Cloud Identity Groups API looks groups up by email)")
        if group not in self._group_names:
            status, data, headers = await self._call("GET", "/groups:lookup", params={"groupKey.id": target.id},
                                                     base=self._ci)
            if status != 200 or not isinstance(data, dict) or not data.get("name"):
                raise self._error(status, data, headers, "groups.lookup")
            self._group_names[group] = str(data["name"])
        return self._group_names[group]

    async def grant(self, user: IdpUser, target: Target, *, grant_id: str, expires_at: datetime) -> GrantResult:
        """The membership and its expiry in one ``memberships.create``; a member already is left as it is."""
        if not user.email:
            raise ConfigError(f"{self.name}: the Cloud Identity Groups API adds members by email; {user.id} has none")
        parent = await self._group_name(target)
        body = {"preferredMemberKey": {"id": user.email},
                "roles": [{"name": "MEMBER", "expiryDetail": {"expireTime": rfc3339(expires_at)}}]}
        status, data, headers = await self._call("POST", f"/{parent}/memberships", body=body, base=self._ci)
        if status == 409:  # ALREADY_EXISTS
            return GrantResult(added=False)
        if status != 200 or not isinstance(data, dict):
            raise self._error(status, data, headers, "memberships.create")
        if data.get("error"):  # the operation finished with an error
            raise self._error(400, {"error": data["error"]}, headers, "memberships.create")
        response = data.get("response")
        membership: dict[str, Any] = response if isinstance(response, dict) else {}
        return GrantResult(added=True, detail={"membership": str(membership.get("name", "")),
                                               "idp_expires_at": rfc3339(expires_at)})

    async def move_expiry(self, user: IdpUser, target: Target, *, expires_at: datetime) -> None:
        parent = await self._group_name(target)
        status, data, headers = await self._call("GET", f"/{parent}/memberships:lookup",
                                                 params={"memberKey.id": user.email or user.id}, base=self._ci)
        if status == 404:
            raise NotFound(f"{self.name}: {user.email or user.id} is no member of {target.id} (its expiry passed?)")
        if status != 200 or not isinstance(data, dict) or not data.get("name"):
            raise self._error(status, data, headers, "memberships.lookup")
        name = quote(str(data["name"]), safe="/")
        body = {"updateRolesParams": [{"fieldMask": EXPIRY_FIELD_MASK, "membershipRole": {
            "name": "MEMBER", "expiryDetail": {"expireTime": rfc3339(expires_at)}}}]}
        status, data, headers = await self._call("POST", f"/{name}:modifyMembershipRoles", body=body, base=self._ci)
        if status != 200:
            raise self._error(status, data, headers, "memberships.modifyMembershipRoles")

    async def check(self, usage: Usage = READ_ONLY) -> list[Check]:
        checks = await super().check(usage)
        if usage.grants and all(c.ok for c in checks):
            checks.append(Check("google expiry backstop", True, (
                f"memberships granted for {named(usage.grants, 'eligibility')} get a Cloud Identity expiry "
                f"(scope {SCOPE_CLOUD_IDENTITY_GROUPS} delegated); Google applies it on Enterprise Standard/Plus, "
                "Enterprise for Education and Cloud Identity Premium only, and refuses the grant elsewhere.")))
        return checks


def from_settings(name: str, settings: dict[str, Any]) -> GoogleWorkspaceConnector:
    """``type: google``: the plain connector, or with ``expiry_backstop: true`` the one with the backstop."""
    config = validate_settings(GoogleWorkspaceConfig, settings, label=f"connector {name!r}")
    return GoogleExpiryConnector(name, config) if config.expiry_backstop else GoogleWorkspaceConnector(name, config)
