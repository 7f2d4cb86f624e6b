"""PIM for Groups in the fake Entra (tests/fakes/idp/entra.py): the assignment schedule requests jitbot's
expiry backstop sends (connectors/entra_pim.py), and the tenant's own end of an assignment at its expiry.

Sources: Microsoft Graph v1.0 "Create assignmentScheduleRequest" (privilegedaccessgroup-post-
assignmentschedulerequests: ``POST /identityGovernance/privilegedAccess/group/assignmentScheduleRequests``,
201 Created with the ``privilegedAccessGroupAssignmentScheduleRequest``), "List assignmentScheduleRequests"
(``$filter`` on ``principalId`` or ``groupId`` is required), the resource type (``accessId`` member | owner;
``action`` adminAssign, adminUpdate, adminRemove, selfActivate, selfDeactivate, adminExtend, selfExtend,
adminRenew, selfRenew; ``scheduleInfo.expiration.type`` notSpecified | noExpiration | afterDateTime |
afterDuration). The permissions are in graph_permissions.py. An active member assignment makes the
principal a member of the group (listed by ``GET /groups/{id}/members``) until it ends.

Assumptions (marked; Graph documents error codes loosely): an ``adminAssign`` over an existing assignment →
400 ``RoleAssignmentExists``; ``adminUpdate`` / ``adminRemove`` without one → 400
``RoleAssignmentDoesNotExist``; a tenant without Entra ID P2 / Governance (``licensed=False``) → 400
``AadPremiumLicenseRequired`` on every PIM call; an ``endDateTime`` not after now → 400 ``InvalidScheduleInfo``;
the assignment is provisioned at once; the membership ends when the fake's clock passes ``endDateTime``.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from tests.fakes.idp.entra import FakeEntra

REQUESTS = "/v1.0/identityGovernance/privilegedAccess/group/assignmentScheduleRequests"
ACTIONS = frozenset({"adminAssign", "adminUpdate", "adminRemove", "selfActivate", "selfDeactivate", "adminExtend",
                     "selfExtend", "adminRenew", "selfRenew"})
EXPIRATION_TYPES = frozenset({"notSpecified", "noExpiration", "afterDateTime", "afterDuration"})


def _time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


class EntraPim:
    def __init__(self, fake: FakeEntra) -> None:
        self.fake = fake
        self.licensed = True
        self.assignments: dict[tuple[str, str], datetime | None] = {}  # (group id, user id) → end
        self.requests: list[dict[str, Any]] = []

    def install(self, app: web.Application) -> None:
        app.router.add_post(REQUESTS, self._create)
        app.router.add_get(REQUESTS, self._list)

    def expire_due(self) -> list[tuple[str, str]]:
        """End every assignment whose ``endDateTime`` the fake's clock has passed (Entra does it on its own)."""
        now = self.fake.clock()
        gone = [key for key, end in self.assignments.items() if end is not None and end <= now]
        for gid, uid in gone:
            del self.assignments[(gid, uid)]
            if uid in self.fake.members.get(gid, []):
                self.fake.members[gid].remove(uid)
        return gone

    @staticmethod
    def _bad(code: str, message: str, status: int = 400) -> web.Response:
        from tests.fakes.idp.entra import graph_error
        return graph_error(status, code, message)

    async def _list(self, request: web.Request) -> web.Response:
        if not self.licensed:
            return self._bad("AadPremiumLicenseRequired", "The tenant needs a Microsoft Entra ID P2 license.")
        match = re.fullmatch(r"(principalId|groupId) eq '([^']*)'", request.query.get("$filter", ""))
        if match is None:
            return self._bad("BadRequest", "The filter on principalId or groupId is required.")
        field = match.group(1)
        items = [r for r in self.requests if r[field] == match.group(2)]
        return web.json_response({"value": items})

    async def _create(self, request: web.Request) -> web.Response:
        if not self.licensed:
            return self._bad("AadPremiumLicenseRequired", "The tenant needs a Microsoft Entra ID P2 license.")
        try:
            body = await request.json()
        except ValueError:
            return self._bad("BadRequest", "Invalid JSON.")
        action, gid, uid = body.get("action"), str(body.get("groupId", "")), str(body.get("principalId", ""))
        if action not in ACTIONS or body.get("accessId") not in ("member", "owner"):
            return self._bad("BadRequest", "action and accessId are required.")
        if gid not in self.fake.groups or uid not in self.fake.users:
            return self._bad("ResourceNotFound", "The group or the principal does not exist.", 404)
        key = (gid, uid)
        end: datetime | None = None
        if action in ("adminAssign", "adminUpdate", "adminExtend"):
            info = body.get("scheduleInfo") or {}
            expiration = info.get("expiration") or {}
            if expiration.get("type", "notSpecified") not in EXPIRATION_TYPES:
                return self._bad("InvalidScheduleInfo", "Unknown expiration type.")
            if expiration.get("type") == "afterDateTime":
                end = _time(expiration.get("endDateTime"))
                if end is None or end <= self.fake.clock():
                    return self._bad("InvalidScheduleInfo", "endDateTime must be in the future.")
        if action == "adminAssign":
            if key in self.assignments:
                return self._bad("RoleAssignmentExists", "The Role assignment already exists.")
            self.assignments[key] = end
            if uid not in self.fake.members[gid]:
                self.fake.members[gid].append(uid)
        elif action in ("adminUpdate", "adminExtend", "adminRemove"):
            if key not in self.assignments:
                return self._bad("RoleAssignmentDoesNotExist", "The Role assignment does not exist.")
            if action == "adminRemove":
                del self.assignments[key]
                if uid in self.fake.members[gid]:
                    self.fake.members[gid].remove(uid)
            else:
                self.assignments[key] = end
        else:
            return self._bad("BadRequest", f"{action} is not an administrator's action.")
        item = {"id": str(uuid.uuid4()), "status": "Revoked" if action == "adminRemove" else "Provisioned",
                "action": action, "accessId": body["accessId"], "principalId": uid, "groupId": gid,
                "targetScheduleId": f"{gid}_{uid}", "justification": body.get("justification"),
                "scheduleInfo": body.get("scheduleInfo"),
                "createdDateTime": self.fake.clock().strftime("%Y-%m-%dT%H:%M:%SZ")}
        self.requests.append(item)
        return web.json_response(item, status=201)
