"""A strict fake of the Jira Cloud REST API v3 operations jitbot calls: ``GET /rest/api/3/issue/{key}``
(ticket checks), ``GET /rest/api/3/myself``, ``GET /rest/api/3/project/{key}`` and
``GET /rest/api/3/project/{key}/statuses`` (``jitbot connectors check``).

Built from the Jira Cloud platform REST API v3 OpenAPI description (Atlassian's swagger-v3.v3.json; the
subset is vendored in tests/specs/jira_platform_v3_subset.json, and tests/fakes/test_jira_fake.py
validates this fake's answers against it) and the developer docs:
- basic auth with the account's email and an API token
  (https://developer.atlassian.com/cloud/jira/platform/basic-auth-for-rest-apis/); anything else → 401;
- query parameters ``fields`` (comma-separated; only those fields come back, as Jira does),
  ``fieldsByKeys``, ``expand``, ``properties``, ``updateHistory``;
- an unknown issue, or one the account may not browse → 404 "Issue does not exist or you do not have
  permission to see it."; errors are ``ErrorCollection`` (``errorMessages``, ``errors``);
- ``/project/{key}``: the key is case sensitive (the spec's words); a project that does not exist or
  that the account may not browse (``add_project(..., browsable=False)``) → 404 "No project could be
  found with key '…'." (the spec: "Returned if the project is not found or the user does not have
  permission to view it"); ``/project/{key}/statuses``: the project's issue types, each with the
  project's statuses (one workflow for all issue types: a simplification, marked), 404 as above;
- ``/myself``: the account the credentials belong to (``User``);
- 429 with ``Retry-After`` seconds (https://developer.atlassian.com/cloud/jira/platform/rate-limiting/).

The request gate (credentials, documented query parameters, log, faults) is bot/fakes/rest_gate.py's.
Assumption (marked, there): the fake refuses undocumented query parameters (Jira ignores them).
"""

from __future__ import annotations

import base64
import itertools
import zlib
from typing import Any

from aiohttp import web

from bot.fakes.rest_gate import GatedFake, Handler

ISSUE_PARAMS = {"fields", "fieldsByKeys", "expand", "properties", "updateHistory"}
MYSELF_PARAMS = {"expand"}
PROJECT_PARAMS = {"expand", "properties"}
WORKFLOW = {"To Do": "new", "In Progress": "indeterminate", "Done": "done"}  # a new project's statuses
# Jira's status categories (statusCategory): new / indeterminate / done
CATEGORIES = {"new": (2, "blue-gray", "To Do"), "indeterminate": (4, "yellow", "In Progress"),
              "done": (3, "green", "Done")}


def errors(status: int, *messages: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"errorMessages": list(messages), "errors": {}}, status=status, headers=headers)


class FakeJira(GatedFake):
    def __init__(self, *, email: str, api_token: str) -> None:
        super().__init__()
        self.email, self.api_token = email, api_token
        self.account_id = "5b10a2844c20165700ede21g"
        self.projects: dict[str, dict[str, Any]] = {}
        self.issues: dict[str, dict[str, Any]] = {}  # key → {"summary", "status", "category", "project"}
        self._ids = itertools.count(10001)

    def add_project(self, key: str, name: str, *, statuses: dict[str, str] | None = None,
                    browsable: bool = True) -> None:
        """Project ``key`` with ``statuses`` (name → category key; a new project's To Do / In Progress /
        Done by default). ``browsable=False``: the account lacks *Browse projects* there."""
        self.projects[key] = {"id": str(next(self._ids)), "key": key, "name": name,
                              "statuses": dict(statuses if statuses is not None else WORKFLOW),
                              "browsable": browsable}

    def add_issue(self, key: str, summary: str, status: str = "In Progress", category: str = "indeterminate") -> None:
        project = key.rsplit("-", 1)[0]
        if project not in self.projects:
            self.add_project(project, project.title())
        self.projects[project]["statuses"].setdefault(status, category)
        self.issues[key] = {"id": str(next(self._ids)), "summary": summary, "status": status,
                            "category": category, "project": project}

    def set_status(self, key: str, status: str, category: str = "done") -> None:
        self.issues[key].update(status=status, category=category)
        self.projects[self.issues[key]["project"]]["statuses"].setdefault(status, category)

    def fail_next(self, status: int, times: int = 1, *, retry_after: int = 2) -> None:
        self.queue_fault(status, times, {"Retry-After": str(retry_after)} if status == 429 else {})

    # ---- serving (the gate: bot/fakes/rest_gate.py) -------------------------------------------------
    def operations(self) -> list[tuple[str, Handler, set[str]]]:
        return [("/rest/api/3/issue/{key}", self._issue, ISSUE_PARAMS),
                ("/rest/api/3/myself", self._myself, MYSELF_PARAMS),
                ("/rest/api/3/project/{key}", self._project, PROJECT_PARAMS),
                ("/rest/api/3/project/{key}/statuses", self._project_statuses, set())]

    def authorised(self, request: web.Request) -> bool:
        expected = "Basic " + base64.b64encode(f"{self.email}:{self.api_token}".encode()).decode()
        return request.headers.get("Authorization") == expected

    def unauthorised(self) -> web.Response:
        return errors(401, "Client must be authenticated to access this resource.")

    def unknown_parameters(self, names: list[str]) -> web.Response:
        return errors(400, f"Unknown query parameter(s): {', '.join(names)}")

    def fault(self, status: int, headers: dict[str, str]) -> web.Response:
        return errors(status, "Rate limit exceeded." if status == 429 else "Internal server error.", headers=headers)

    def _avatars(self) -> dict[str, str]:
        return {s: f"{self.url}/avatar.png?size={s}" for s in ("48x48", "24x24", "16x16", "32x32")}

    def _visible(self, key: str) -> dict[str, Any] | None:
        project = self.projects.get(key)  # case sensitive, as the spec says
        return project if project is not None and project["browsable"] else None

    async def _myself(self, request: web.Request) -> web.Response:
        return web.json_response({
            "self": f"{self.url}/rest/api/3/user?accountId={self.account_id}", "accountId": self.account_id,
            "accountType": "atlassian", "emailAddress": self.email, "avatarUrls": self._avatars(),
            "displayName": "jitbot", "active": True, "timeZone": "Etc/UTC", "locale": "en_US",
            "groups": {"size": 0, "items": []}, "applicationRoles": {"size": 0, "items": []},
            "expand": "groups,applicationRoles"})

    async def _project(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        project = self._visible(key)
        if project is None:
            return errors(404, f"No project could be found with key '{key}'.")
        return web.json_response({
            "expand": "description,lead,issueTypes,url,projectKeys,permissions,insight",
            "self": f"{self.url}/rest/api/3/project/{project['id']}", "id": project["id"], "key": project["key"],
            "name": project["name"], "description": "", "avatarUrls": self._avatars(), "projectTypeKey": "software",
            "simplified": False, "style": "classic", "isPrivate": False, "properties": {},
            "issueTypes": [self._issue_type(project)]})

    def _issue_type(self, project: dict[str, Any]) -> dict[str, Any]:
        return {"self": f"{self.url}/rest/api/3/issuetype/3", "id": "3", "name": "Task", "subtask": False,
                "description": "A small piece of work.", "iconUrl": f"{self.url}/task.png", "avatarId": 10318,
                "hierarchyLevel": 0}

    async def _project_statuses(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        project = self._visible(key)
        if project is None:
            return errors(404, f"No project could be found with key '{key}'.")
        statuses = [self._status({"status": name, "category": cat}) for name, cat in project["statuses"].items()]
        for status in statuses:
            status.pop("statusCategory")  # the statuses endpoint's example lists them without their category
        return web.json_response([{"self": f"{self.url}/rest/api/3/issueType/3", "id": "3", "name": "Task",
                                   "subtask": False, "statuses": statuses}])

    def _status(self, issue: dict[str, Any]) -> dict[str, Any]:
        cid, color, cname = CATEGORIES[issue["category"]]
        sid = str(zlib.crc32(issue["status"].encode()) % 10000)
        return {"self": f"{self.url}/rest/api/3/status/{sid}", "description": "", "iconUrl": f"{self.url}/s.png",
                "name": issue["status"], "id": sid,
                "statusCategory": {"self": f"{self.url}/rest/api/3/statuscategory/{cid}", "id": cid,
                                   "key": issue["category"], "colorName": color, "name": cname}}

    async def _issue(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        issue = self.issues.get(key.upper())
        if issue is None:
            return errors(404, "Issue does not exist or you do not have permission to see it.")
        wanted = {f.strip() for f in request.query.get("fields", "*all").split(",") if f.strip()}
        project = self.projects[issue["project"]]
        every = {"summary": issue["summary"], "status": self._status(issue),
                 "project": {"self": f"{self.url}/rest/api/3/project/{project['id']}", "id": project["id"],
                             "key": project["key"], "name": project["name"], "projectTypeKey": "software",
                             "simplified": False, "avatarUrls": self._avatars()}}
        fields = every if "*all" in wanted or "*navigable" in wanted else {k: v for k, v in every.items()
                                                                           if k in wanted}
        return web.json_response({"expand": "renderedFields,names,schema,operations,editmeta,changelog",
                                  "id": issue["id"], "self": f"{self.url}/rest/api/3/issue/{issue['id']}",
                                  "key": key.upper(), "fields": fields})
