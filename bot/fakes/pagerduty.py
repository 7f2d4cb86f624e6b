"""A strict fake of the PagerDuty REST API v2 operations jitbot calls: ``GET /oncalls`` and ``GET /users``
(on-call approval), ``GET /schedules/{id}`` and ``GET /escalation_policies/{id}`` (``jitbot connectors
check``).

Built from PagerDuty's OpenAPI description (github.com/PagerDuty/api-schema, reference/REST/openapiv3.json;
the subset is vendored in tests/specs/pagerduty_rest_subset.json, and tests/fakes/test_pagerduty_fake.py
validates this fake's answers against it) and the developer docs:
- auth: ``Authorization: Token token=<key>`` (the spec's ``api_key`` scheme); anything else → 401;
- ``Accept: application/vnd.pagerduty+json;version=2`` when given (another version → 400);
- ``/oncalls`` filters ``schedule_ids[]``, ``escalation_policy_ids[]``, ``user_ids[]`` (combined with AND),
  ``since``/``until`` (default now; an on-call counts when it overlaps the range; ``until`` before
  ``since`` → 400); ``include[]`` of users, schedules, escalation_policies; ``earliest``; ``time_zone``;
- ``/users`` ``query``, ``team_ids[]``, ``include[]``. The spec's ``query`` says "records whose name
  matches"; the fake matches name or email (case-insensitively), as PagerDuty does for users and as the
  official client relies on (``pagerduty``/``pdpyras`` ``find("users", email, attribute="email")``) —
  jitbot keeps only an exact email match of what comes back;
- ``/schedules/{id}`` (query ``time_zone``, ``since``, ``until``, ``overflow``,
  ``include_next_oncall_for_user``) and ``/escalation_policies/{id}`` (``include[]``): the object, or 404
  code 2100 "Not Found";
- a scoped OAuth token (``scopes=``) reaches an operation only with the operation's
  ``x-pd-requires-scope`` (oncalls.read, users.read, schedules.read, escalation_policies.read); otherwise
  403. Assumption (marked): the 403's error code, which the spec does not give, is 2010 "Access Denied";
  an account or user API key (``scopes=None``) reaches every read;
- classic paging: ``offset`` / ``limit`` (default 25, at most 100), ``more``, ``total`` (null unless
  ``total=true``);
- errors in PagerDuty's shape ``{"error": {"message", "code", "errors": [...]}}`` with the codes of
  https://developer.pagerduty.com/docs/rest-api-v2/errors (2001 invalid input, 2006 authentication
  failed, 2100 not found); 429 carries ``ratelimit-limit``, ``ratelimit-remaining`` and
  ``ratelimit-reset`` (seconds), as https://support.pagerduty.com/docs/rest-api-rate-limits describes.

The request gate (credentials, documented query parameters, log, faults) is bot/fakes/rest_gate.py's.
Assumption (marked, there): the fake refuses query parameters the operation does not document (PagerDuty
ignores them) — a misspelt filter such as ``user_ids`` without ``[]`` would otherwise widen the query.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from bot.fakes.rest_gate import GatedFake, Handler

API = "https://api.pagerduty.com"
WEB = "https://playground.pagerduty.com"
ONCALL_PARAMS = {"time_zone", "limit", "offset", "total", "include[]", "user_ids[]", "escalation_policy_ids[]",
                 "schedule_ids[]", "since", "until", "earliest"}
USER_PARAMS = {"query", "team_ids[]", "limit", "offset", "total", "include[]"}
SCHEDULE_PARAMS = {"time_zone", "since", "until", "overflow", "include_next_oncall_for_user"}
POLICY_PARAMS = {"include[]"}
SCOPES = {"/oncalls": "oncalls.read", "/users": "users.read", "/schedules/{id}": "schedules.read",
          "/escalation_policies/{id}": "escalation_policies.read"}


def pd_error(status: int, message: str, code: int | None = None, errors: list[str] | None = None,
             headers: dict[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"message": message}
    if code is not None:
        body["code"] = code
    if errors:
        body["errors"] = errors
    return web.json_response({"error": body}, status=status, headers=headers)


def _iso(at: datetime | None) -> str | None:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z") if at else None


@dataclass
class OnCallEntry:
    user_id: str
    escalation_policy_id: str
    level: int
    schedule_id: str | None  # None: the user is a direct target of the escalation policy
    start: datetime | None  # None with end None: a permanent on-call
    end: datetime | None


class FakePagerDuty(GatedFake):
    def __init__(self, *, token: str, clock: Callable[[], datetime] | None = None,
                 scopes: set[str] | None = None) -> None:
        super().__init__()
        self.token = token
        self.scopes = scopes  # a scoped OAuth token's scopes; None: an API key
        self.clock = clock or (lambda: datetime.now(UTC))
        self.users: dict[str, dict[str, Any]] = {}
        self.schedules: dict[str, str] = {}  # id → name
        self.policies: dict[str, str] = {}  # escalation policy id → name
        self.schedule_policies: dict[str, set[str]] = {}  # schedule id → the escalation policies using it
        self.oncalls: list[OnCallEntry] = []
        self._ids = itertools.count(1)

    # ---- state -------------------------------------------------------------------------------------
    def add_user(self, email: str, name: str) -> str:
        uid = f"PU{next(self._ids):05d}"
        self.users[uid] = {"id": uid, "type": "user", "summary": name, "name": name, "email": email,
                           "self": f"{API}/users/{uid}", "html_url": f"{WEB}/users/{uid}", "time_zone": "Etc/UTC",
                           "color": "green", "role": "user", "description": "", "invitation_sent": False,
                           "job_title": "", "teams": [], "contact_methods": [], "notification_rules": []}
        return uid

    def add_schedule(self, schedule_id: str, name: str, *, policy_id: str, policy_name: str = "") -> None:
        self.schedules[schedule_id] = name
        self.policies.setdefault(policy_id, policy_name or f"{name} policy")
        self.schedule_policies.setdefault(schedule_id, set()).add(policy_id)

    def put_on_call(self, user_id: str, *, policy_id: str, level: int = 1, schedule_id: str | None = None,
                    start: datetime | None = None, end: datetime | None = None) -> OnCallEntry:
        self.policies.setdefault(policy_id, f"Policy {policy_id}")
        entry = OnCallEntry(user_id, policy_id, level, schedule_id, start, end)
        self.oncalls.append(entry)
        return entry

    def user_by_email(self, email: str) -> str | None:
        return next((uid for uid, u in self.users.items() if u["email"].lower() == email.lower()), None)

    def fail_next(self, status: int, times: int = 1, *, reset_s: int = 2) -> None:
        """The next ``times`` calls answer ``status`` (429 with PagerDuty's rate-limit headers)."""
        headers = ({"ratelimit-limit": "960", "ratelimit-remaining": "0", "ratelimit-reset": str(reset_s)}
                   if status == 429 else {})
        self.queue_fault(status, times, headers)

    # ---- serving (the gate: bot/fakes/rest_gate.py) -------------------------------------------------
    def operations(self) -> list[tuple[str, Handler, set[str]]]:
        return [("/oncalls", self._oncalls, ONCALL_PARAMS), ("/users", self._users, USER_PARAMS),
                ("/schedules/{id}", self._schedule, SCHEDULE_PARAMS),
                ("/escalation_policies/{id}", self._escalation_policy, POLICY_PARAMS)]

    def authorised(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Token token={self.token}"

    def unauthorised(self) -> web.Response:
        return pd_error(401, "Authentication failed", 2006)

    def refused_header(self, request: web.Request) -> web.Response | None:
        accept = request.headers.get("Accept", "")
        if "vnd.pagerduty+json" in accept and "version=2" not in accept:
            return pd_error(400, "Invalid Input Provided", 2001, ["Unsupported API version"])
        resource = request.match_info.route.resource
        scope = SCOPES.get(resource.canonical) if resource is not None else None
        if self.scopes is not None and scope is not None and scope not in self.scopes:
            return pd_error(403, "Access Denied", 2010, [f"The token lacks the scope {scope}"])
        return None

    def unknown_parameters(self, names: list[str]) -> web.Response:
        return pd_error(400, "Invalid Input Provided", 2001, [f"Unknown parameter {u}" for u in names])

    def fault(self, status: int, headers: dict[str, str]) -> web.Response:
        if status == 429:
            return pd_error(429, "Rate Limit Exceeded", headers=headers)
        return pd_error(status, "Internal Server Error" if status >= 500 else "Error")

    @staticmethod
    def _paging(query: MultiMapping[str]) -> tuple[int, int] | web.Response:
        try:
            limit, offset = int(query.get("limit", "25")), int(query.get("offset", "0"))
        except ValueError:
            return pd_error(400, "Invalid Input Provided", 2001, ["limit and offset must be integers"])
        if not 1 <= limit <= 100 or offset < 0:
            return pd_error(400, "Invalid Input Provided", 2001, ["limit must be 1 to 100, offset 0 or more"])
        return limit, offset

    @staticmethod
    def _page(key: str, rows: list[dict[str, Any]], limit: int, offset: int, total: bool) -> web.Response:
        page = rows[offset:offset + limit]
        return web.json_response({key: page, "limit": limit, "offset": offset,
                                  "more": offset + len(page) < len(rows), "total": len(rows) if total else None})

    def _ref(self, kind: str, rid: str, name: str, path: str) -> dict[str, Any]:
        return {"id": rid, "type": f"{kind}_reference", "summary": name, "self": f"{API}/{path}/{rid}",
                "html_url": f"{WEB}/{path}/{rid}"}

    async def _oncalls(self, request: web.Request) -> web.Response:
        q = request.query
        paging = self._paging(q)
        if isinstance(paging, web.Response):
            return paging
        now = self.clock()
        try:
            since = datetime.fromisoformat(q["since"].replace("Z", "+00:00")) if "since" in q else now
            until = datetime.fromisoformat(q["until"].replace("Z", "+00:00")) if "until" in q else now
        except ValueError:
            return pd_error(400, "Invalid Input Provided", 2004, ["Invalid 'since' or 'until' Parameter Values"])
        if since.tzinfo is None or until.tzinfo is None or until < since:
            return pd_error(400, "Invalid Input Provided", 2004, ["Invalid 'since' or 'until' Parameter Values"])
        if until - now > timedelta(days=90):
            return pd_error(400, "Invalid Input Provided", 2005, ["On-call shifts are limited to 90 days ahead"])
        schedules, policies, users = q.getall("schedule_ids[]", []), q.getall("escalation_policy_ids[]", []), \
            q.getall("user_ids[]", [])
        include = set(q.getall("include[]", []))
        if include - {"users", "schedules", "escalation_policies"}:
            return pd_error(400, "Invalid Input Provided", 2001, ["include[] must be users, schedules or "
                                                                  "escalation_policies"])
        rows = []
        for e in self.oncalls:
            if schedules and e.schedule_id not in schedules and not (e.schedule_id is None and 'null' in schedules):
                continue
            if policies and e.escalation_policy_id not in policies:
                continue
            if users and e.user_id not in users:
                continue
            if (e.start is not None and e.start > until) or (e.end is not None and e.end <= since):
                continue
            user = self.users[e.user_id]
            row: dict[str, Any] = {
                "user": dict(user) if "users" in include else self._ref("user", e.user_id, user["name"], "users"),
                "escalation_policy": self._ref("escalation_policy", e.escalation_policy_id,
                                               self.policies[e.escalation_policy_id], "escalation_policies"),
                "schedule": (self._ref("schedule", e.schedule_id, self.schedules.get(e.schedule_id, e.schedule_id),
                                       "schedules") if e.schedule_id else None),
                "escalation_level": e.level, "start": _iso(e.start), "end": _iso(e.end)}
            rows.append(row)
        limit, offset = paging
        return self._page("oncalls", rows, limit, offset, q.get("total") == "true")

    async def _users(self, request: web.Request) -> web.Response:
        q = request.query
        paging = self._paging(q)
        if isinstance(paging, web.Response):
            return paging
        needle = q.get("query", "").lower()
        rows = [u for u in self.users.values() if needle in u["email"].lower() or needle in u["name"].lower()]
        limit, offset = paging
        return self._page("users", rows, limit, offset, q.get("total") == "true")

    async def _schedule(self, request: web.Request) -> web.Response:
        sid = request.match_info["id"]
        name = self.schedules.get(sid)
        if name is None:
            return pd_error(404, "Not Found", 2100)
        policies = sorted({e.escalation_policy_id for e in self.oncalls if e.schedule_id == sid}
                          | self.schedule_policies.get(sid, set()))
        return web.json_response({"schedule": {
            "id": sid, "type": "schedule", "summary": name, "self": f"{API}/schedules/{sid}",
            "html_url": f"{WEB}/schedules/{sid}", "name": name, "time_zone": "Etc/UTC", "description": "",
            "escalation_policies": [self._ref("escalation_policy", p, self.policies[p], "escalation_policies")
                                    for p in policies if p in self.policies],
            "users": [], "teams": [], "schedule_layers": []}})

    async def _escalation_policy(self, request: web.Request) -> web.Response:
        pid = request.match_info["id"]
        name = self.policies.get(pid)
        if name is None:
            return pd_error(404, "Not Found", 2100)
        targets = sorted({e.schedule_id for e in self.oncalls if e.escalation_policy_id == pid and e.schedule_id}
                         | {s for s, ps in self.schedule_policies.items() if pid in ps})
        rules = [{"id": f"R{pid}", "escalation_delay_in_minutes": 30,
                  "targets": [self._ref("schedule", t, self.schedules.get(t, t), "schedules") for t in targets]}]
        return web.json_response({"escalation_policy": {
            "id": pid, "type": "escalation_policy", "summary": name, "self": f"{API}/escalation_policies/{pid}",
            "html_url": f"{WEB}/escalation_policies/{pid}", "name": name, "description": "", "num_loops": 0,
            "on_call_handoff_notifications": "if_has_services", "escalation_rules": rules if targets else [],
            "services": [], "teams": []}})
