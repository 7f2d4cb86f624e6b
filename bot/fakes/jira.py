"""A strict fake of the one Jira Cloud REST API v3 operation jitbot calls: ``GET /rest/api/3/issue/{key}``.

Built from the Jira Cloud platform REST API v3 OpenAPI description (Atlassian's swagger-v3.v3.json; the
subset is vendored in tests/specs/jira_platform_v3_subset.json, and tests/fakes/test_jira_fake.py
validates this fake's answers against it) and the developer docs:
- basic auth with the account's email and an API token
  (https://developer.atlassian.com/cloud/jira/platform/basic-auth-for-rest-apis/); anything else → 401;
- query parameters ``fields`` (comma-separated; only those fields come back, as Jira does),
  ``fieldsByKeys``, ``expand``, ``properties``, ``updateHistory``;
- an unknown issue, or one the account may not browse → 404 "Issue does not exist or you do not have
  permission to see it."; errors are ``ErrorCollection`` (``errorMessages``, ``errors``);
- 429 with ``Retry-After`` seconds (https://developer.atlassian.com/cloud/jira/platform/rate-limiting/).

Assumption (marked): the fake refuses undocumented query parameters (Jira ignores them).
"""

from __future__ import annotations

import base64
import itertools
import zlib
from collections import deque
from typing import Any

from aiohttp import web

ISSUE_PARAMS = {"fields", "fieldsByKeys", "expand", "properties", "updateHistory"}
# Jira's status categories (statusCategory): new / indeterminate / done
CATEGORIES = {"new": (2, "blue-gray", "To Do"), "indeterminate": (4, "yellow", "In Progress"),
              "done": (3, "green", "Done")}


def errors(status: int, *messages: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"errorMessages": list(messages), "errors": {}}, status=status, headers=headers)


class FakeJira:
    def __init__(self, *, email: str, api_token: str) -> None:
        self.email, self.api_token = email, api_token
        self.projects: dict[str, dict[str, Any]] = {}
        self.issues: dict[str, dict[str, Any]] = {}  # key → {"summary", "status", "category", "project"}
        self.requests: list[tuple[str, str]] = []
        self._faults: deque[tuple[int, dict[str, str]]] = deque()
        self._ids = itertools.count(10001)
        self._runner: web.AppRunner | None = None
        self.url = ""

    def add_project(self, key: str, name: str) -> None:
        self.projects[key] = {"id": str(next(self._ids)), "key": key, "name": name}

    def add_issue(self, key: str, summary: str, status: str = "In Progress", category: str = "indeterminate") -> None:
        project = key.rsplit("-", 1)[0]
        if project not in self.projects:
            self.add_project(project, project.title())
        self.issues[key] = {"id": str(next(self._ids)), "summary": summary, "status": status,
                            "category": category, "project": project}

    def set_status(self, key: str, status: str, category: str = "done") -> None:
        self.issues[key].update(status=status, category=category)

    def fail_next(self, status: int, times: int = 1, *, retry_after: int = 2) -> None:
        self._faults.extend([(status, {"Retry-After": str(retry_after)} if status == 429 else {})] * times)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/rest/api/3/issue/{key}", self._issue)
        return app

    async def start(self) -> FakeJira:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner = None

    def _status(self, issue: dict[str, Any]) -> dict[str, Any]:
        cid, color, cname = CATEGORIES[issue["category"]]
        sid = str(zlib.crc32(issue["status"].encode()) % 10000)
        return {"self": f"{self.url}/rest/api/3/status/{sid}", "description": "", "iconUrl": f"{self.url}/s.png",
                "name": issue["status"], "id": sid,
                "statusCategory": {"self": f"{self.url}/rest/api/3/statuscategory/{cid}", "id": cid,
                                   "key": issue["category"], "colorName": color, "name": cname}}

    async def _issue(self, request: web.Request) -> web.Response:
        expected = "Basic " + base64.b64encode(f"{self.email}:{self.api_token}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return errors(401, "Client must be authenticated to access this resource.")
        unknown = sorted(set(request.query) - ISSUE_PARAMS)
        if unknown:
            return errors(400, f"Unknown query parameter(s): {', '.join(unknown)}")
        self.requests.append((request.path, request.query_string))
        if self._faults:
            status, headers = self._faults.popleft()
            return errors(status, "Rate limit exceeded." if status == 429 else "Internal server error.",
                          headers=headers)
        key = request.match_info["key"]
        issue = self.issues.get(key.upper())
        if issue is None:
            return errors(404, "Issue does not exist or you do not have permission to see it.")
        wanted = {f.strip() for f in request.query.get("fields", "*all").split(",") if f.strip()}
        project = self.projects[issue["project"]]
        every = {"summary": issue["summary"], "status": self._status(issue),
                 "project": {"self": f"{self.url}/rest/api/3/project/{project['id']}", "id": project["id"],
                             "key": project["key"], "name": project["name"], "projectTypeKey": "software",
                             "simplified": False,
                             "avatarUrls": {s: f"{self.url}/avatar.png?size={s}" for s in
                                            ("48x48", "24x24", "16x16", "32x32")}}}
        fields = every if "*all" in wanted or "*navigable" in wanted else {k: v for k, v in every.items()
                                                                           if k in wanted}
        return web.json_response({"expand": "renderedFields,names,schema,operations,editmeta,changelog",
                                  "id": issue["id"], "self": f"{self.url}/rest/api/3/issue/{issue['id']}",
                                  "key": key.upper(), "fields": fields})
