"""The Cloud Identity Groups API part of the fake Google (tests/fakes/idp/google.py): the methods jitbot's
expiry backstop calls, over the same groups and users as the fake Directory API.

Source: the discovery document ``cloudidentity.v1`` from google-api-python-client 2.202.0, vendored as
tests/specs/google/cloudidentity.v1.subset.json (every exchange is checked against it), and Google's guide
"Managing membership expirations":

- ``groups.lookup`` ``GET /v1/groups:lookup?groupKey.id=<email>`` → ``{"name": "groups/<id>"}``;
- ``groups.memberships.create`` ``POST /v1/groups/<id>/memberships`` → an ``Operation`` (``done``, the
  ``Membership`` in ``response``); an existing member → 409 ``ALREADY_EXISTS``;
- ``groups.memberships.lookup`` ``GET /v1/groups/<id>/memberships:lookup?memberKey.id=<email>``;
- ``groups.memberships.modifyMembershipRoles`` with ``updateRolesParams``: the field mask may only be
  ``expiry_detail.expire_time``; only the ``MEMBER`` role carries an expiry; ``updateRolesParams`` and
  ``addRoles`` / ``removeRoles`` together are refused;
- the scopes: ``cloud-identity.groups`` (or ``cloud-platform``); lookups also take ``.readonly``.

The fake removes a member itself once its clock (injected: ``FakeGoogleWorkspace(clock=...)``) passes the
membership's expiry, before answering any call and on ``expire_due()``.

Assumptions (not documented): an expiry on an edition without membership expiry is refused with 400
``FAILED_PRECONDITION`` (``licensed=False``); an expiry in the past is 400 ``INVALID_ARGUMENT``; a
membership's name is ``groups/<group id>/memberships/<user id>``; the operation is done at once.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from tests.fakes.idp.google import FakeGoogleWorkspace

CI = "/v1"
SCOPE_CI = "https://www.googleapis.com/auth/cloud-identity.groups"
SCOPE_CI_READ = "https://www.googleapis.com/auth/cloud-identity.groups.readonly"
SCOPE_CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
FIELD_MASK = "expiry_detail.expire_time"


def _error(code: int, message: str, status: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, "status": status}}, status=code)


def _time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


class CloudIdentity:
    """Routes and state; ``fake.expiries`` holds (group email, user id) → expiry."""

    def __init__(self, fake: FakeGoogleWorkspace) -> None:
        self.fake = fake

    def install(self, app: web.Application) -> None:
        app.router.add_get(CI + "/groups:lookup", self._group_lookup)
        app.router.add_post(CI + "/groups/{gid}/memberships", self._create)
        app.router.add_get(CI + "/groups/{gid}/memberships:lookup", self._lookup)
        app.router.add_post(CI + "/groups/{gid}/memberships/{mid:[^/:]+}:modifyMembershipRoles", self._modify)

    def expire_due(self) -> list[tuple[str, str]]:
        """Remove every membership whose expiry the clock has passed (what Google does on its own)."""
        now = self.fake.clock()
        gone = [key for key, at in self.fake.expiries.items() if at <= now]
        for group_email, uid in gone:
            del self.fake.expiries[(group_email, uid)]
            group = self.fake.groups.get(group_email)
            if group is not None:
                group["members"].discard(uid)
        return gone

    def _scoped(self, request: web.Request, *, read: bool = False) -> web.Response | None:
        from tests.fakes.idp.google import SCOPES_KEY
        accepted = {SCOPE_CI, SCOPE_CLOUD_PLATFORM} | ({SCOPE_CI_READ} if read else set())
        if request[SCOPES_KEY].isdisjoint(accepted):
            return _error(403, "Request had insufficient authentication scopes.", "PERMISSION_DENIED")
        return None

    def _group(self, gid: str) -> dict[str, Any] | None:
        return next((g for g in self.fake.groups.values() if g["id"] == gid), None)

    def _membership(self, group: dict[str, Any], uid: str) -> dict[str, Any]:
        role: dict[str, Any] = {"name": "MEMBER"}
        at = self.fake.expiries.get((group["email"], uid))
        if at is not None:
            role["expiryDetail"] = {"expireTime": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
        return {"name": f"groups/{group['id']}/memberships/{uid}", "type": "USER", "roles": [role],
                "preferredMemberKey": {"id": self.fake.users[uid]["primaryEmail"]}}

    async def _group_lookup(self, request: web.Request) -> web.Response:
        if denied := self._scoped(request, read=True):
            return denied
        group = self.fake.groups.get(request.query.get("groupKey.id", "").lower())
        if group is None:
            return _error(403, "Error(2028): Permission denied for group resource", "PERMISSION_DENIED")
        return web.json_response({"name": f"groups/{group['id']}"})

    async def _create(self, request: web.Request) -> web.Response:
        if denied := self._scoped(request):
            return denied
        group = self._group(request.match_info["gid"])
        body = await request.json()
        key = body.get("preferredMemberKey") or {}
        user = self.fake.users_by_email().get(str(key.get("id", "")).lower())
        if group is None:
            return _error(404, "Group not found", "NOT_FOUND")
        if user is None:
            return _error(400, "Error(4003): Cannot find member", "INVALID_ARGUMENT")
        roles = body.get("roles") or [{"name": "MEMBER"}]
        expiry: datetime | None = None
        for role in roles:
            if "expiryDetail" not in role:
                continue
            if role.get("name") != "MEMBER":
                return _error(400, "Expiry details are only supported for MEMBER roles", "INVALID_ARGUMENT")
            if not self.fake.expiry_licensed:
                return _error(400, "Membership expiry is not available for this customer", "FAILED_PRECONDITION")
            expiry = _time(role["expiryDetail"].get("expireTime"))
            if expiry is None or expiry <= self.fake.clock():
                return _error(400, "Invalid expireTime", "INVALID_ARGUMENT")
        if user["id"] in group["members"]:
            return _error(409, "Error(4003): Member already exists.", "ALREADY_EXISTS")
        group["members"].add(user["id"])
        if expiry is not None:
            self.fake.expiries[(group["email"], user["id"])] = expiry
        membership = self._membership(group, user["id"])
        return web.json_response({"done": True, "response": {
            "@type": "type.googleapis.com/google.apps.cloudidentity.groups.v1.Membership", **membership}})

    async def _lookup(self, request: web.Request) -> web.Response:
        if denied := self._scoped(request, read=True):
            return denied
        group = self._group(request.match_info["gid"])
        user = self.fake.users_by_email().get(request.query.get("memberKey.id", "").lower())
        if group is None or user is None or user["id"] not in group["members"]:
            return _error(404, "Membership not found", "NOT_FOUND")
        return web.json_response({"name": f"groups/{group['id']}/memberships/{user['id']}"})

    async def _modify(self, request: web.Request) -> web.Response:
        if denied := self._scoped(request):
            return denied
        group = self._group(request.match_info["gid"])
        uid = request.match_info["mid"]
        if group is None or uid not in group["members"]:
            return _error(404, "Membership not found", "NOT_FOUND")
        body = await request.json()
        updates = body.get("updateRolesParams") or []
        if updates and (body.get("addRoles") or body.get("removeRoles")):
            return _error(400, "updateRolesParams cannot be combined with addRoles or removeRoles", "INVALID_ARGUMENT")
        for update in updates:
            role = update.get("membershipRole") or {}
            if update.get("fieldMask") != FIELD_MASK:
                return _error(400, f"fieldMask may only contain {FIELD_MASK}", "INVALID_ARGUMENT")
            if role.get("name") != "MEMBER":
                return _error(400, "Only the MEMBER role can be updated", "INVALID_ARGUMENT")
            if not self.fake.expiry_licensed:
                return _error(400, "Membership expiry is not available for this customer", "FAILED_PRECONDITION")
            at = _time((role.get("expiryDetail") or {}).get("expireTime"))
            if at is None or at <= self.fake.clock():
                return _error(400, "Invalid expireTime", "INVALID_ARGUMENT")
            self.fake.expiries[(group["email"], uid)] = at
        return web.json_response({"membership": self._membership(group, uid)})
