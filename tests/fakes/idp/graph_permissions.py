"""Microsoft Graph's documented application permissions for the paths the fake Entra serves.

Each entry lists the application permissions (a token's ``roles`` claim) any one of which lets an app
call the path: the least privileged first, then the higher privileged ones. Sources:

* microsoftgraph/msgraph-metadata ``permissions/beta/{GroupMember,User,AuditLog}.json`` (commits
  70ae5b41 and 3755654b), the machine-readable form of the permission tables: ``GroupMember.Read.All``
  (Application) covers ``GET /groups``, ``/groups/{id}`` and ``/groups/{id}/members``;
  ``GroupMember.ReadWrite.All`` covers ``GET``/``POST /groups/{id}/members`` and
  ``DELETE /groups/{id}/members/{id}`` but not ``GET /groups``; ``User.Read.All`` (Application) covers
  ``GET /users``; ``/users/{id}/memberof`` is listed for ``GroupMember.Read.All`` and ``User.Read``
  only as *DelegatedWork*; ``AuditLog.Read.All`` covers ``GET /auditlogs/signins``.
* the Graph v1.0 reference pages: "List a user's direct memberships" (``user-list-memberof``:
  application access to another user's memberships needs ``Directory.Read.All``), "user:
  revokeSignInSessions" (``User.RevokeSessions.All``, no higher application permission), "List
  group members" / "Add members" / "Remove member" (the ``Group.*`` and ``Directory.*`` permissions
  as the higher privileged ones).

* PIM for Groups (Graph v1.0 "Create assignmentScheduleRequest" and "List assignmentScheduleRequests",
  Permissions, Application): creating a request needs ``PrivilegedAssignmentSchedule.ReadWrite.AzureADGroup``
  (``PrivilegedAssignmentSchedule.Remove.AzureADGroup`` is listed as the higher privileged one); listing
  needs ``PrivilegedAssignmentSchedule.Read.AzureADGroup`` or the ``ReadWrite`` one. Assumption: the
  ``Remove`` permission is accepted for every action here, as the table lists it, though its name says it
  only removes.

"Limited information returned for inaccessible member objects" (Graph docs): listing a group's members
without a permission that reads users returns each user with only ``@odata.type`` and ``id``.
"""

from __future__ import annotations

import re

_DIR_READ = ("Directory.Read.All", "Directory.ReadWrite.All")
_GROUP_READ = ("GroupMember.Read.All", "Group.Read.All", "Group.ReadWrite.All", *_DIR_READ)
_MEMBER_WRITE = ("GroupMember.ReadWrite.All", "Group.ReadWrite.All", "Directory.ReadWrite.All")

# (method, path under /v1.0 as a regular expression) → accepted application permissions, least first
PERMISSIONS: list[tuple[str, str, tuple[str, ...]]] = [
    ("GET", r"/users", ("User.Read.All", "User.ReadWrite.All", *_DIR_READ)),
    ("GET", r"/users/[^/]+", ("User.Read.All", "User.ReadWrite.All", *_DIR_READ)),
    ("GET", r"/users/[^/]+/memberOf", _DIR_READ),
    # "user: checkMemberGroups" (Graph v1.0 reference, Permissions, Application): User.Read.All *and*
    # GroupMember.Read.All (or Group.Read.All), or Directory.Read.All. The group half is checked here, the
    # user half by the fake's handler (USER_READERS).
    ("POST", r"/users/[^/]+/checkMemberGroups", ("GroupMember.Read.All", "Group.Read.All", *_DIR_READ)),
    ("POST", r"/users/[^/]+/revokeSignInSessions", ("User.RevokeSessions.All",)),
    ("GET", r"/groups", _GROUP_READ),
    ("GET", r"/groups/[^/]+/members", ("GroupMember.Read.All", "GroupMember.ReadWrite.All", "Group.Read.All",
                                       "Group.ReadWrite.All", *_DIR_READ)),
    ("POST", r"/groups/[^/]+/members/\$ref", _MEMBER_WRITE),
    ("DELETE", r"/groups/[^/]+/members/[^/]+/\$ref", _MEMBER_WRITE),
    ("GET", r"/auditLogs/signIns", ("AuditLog.Read.All",)),
    ("POST", r"/identityGovernance/privilegedAccess/group/assignmentScheduleRequests",
     ("PrivilegedAssignmentSchedule.ReadWrite.AzureADGroup", "PrivilegedAssignmentSchedule.Remove.AzureADGroup")),
    ("GET", r"/identityGovernance/privilegedAccess/group/assignmentScheduleRequests",
     ("PrivilegedAssignmentSchedule.Read.AzureADGroup", "PrivilegedAssignmentSchedule.ReadWrite.AzureADGroup")),
]

# Reading users' properties (mail, userPrincipalName, displayName) through a directoryObject collection
USER_READERS = frozenset({"User.Read.All", "User.ReadWrite.All", *_DIR_READ})


def required(method: str, path: str) -> tuple[str, ...]:
    """The permissions any one of which lets an app call ``method path`` (``path`` under ``/v1.0``)."""
    for m, pattern, accepted in PERMISSIONS:
        if m == method and re.fullmatch(pattern, path):
            return accepted
    raise KeyError(f"no documented permission for {method} {path}: the fake does not serve it")
