"""PagerDuty REST API v2, read only: who is on call now (``GET /oncalls``) and a person's user id by email
(``GET /users?query=``). Used for on-call approval (bot/services/context/on_call.py), never to grant anything.

Plain aiohttp, not the official ``pagerduty`` client (PyPI ``pagerduty``, formerly ``pdpyras``): that
client is built on ``requests`` and blocks, and jitbot's event loop also answers Slack; it would need a
thread per call and brings its own retry-with-sleep, where a request's on-call check must fail fast and
fall back to the human approvers.

Reference: PagerDuty's OpenAPI description (github.com/PagerDuty/api-schema, reference/REST/openapiv3.json;
the operations used are vendored in tests/specs/pagerduty_rest_subset.json) and
https://developer.pagerduty.com/docs/rest-api-rate-limits (429 with ``ratelimit-reset`` seconds).

Errors (connectors.base): 401/403 ``PermissionDenied``, 429 ``RateLimited``, 5xx / network ``Transient``,
other 4xx ``ConnectorError``. Messages name the call, never the token.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import aiohttp
from pydantic import BaseModel, ConfigDict, SecretStr

from connectors.base import ConnectorError, Transient
from connectors.rest import error_for_status, exchange, validate_settings

DEFAULT_BASE_URL = "https://api.pagerduty.com"
PAGE = 100  # PagerDuty's largest page for classic offset paging
MAX_PAGES = 20  # a person is on call in a handful of places; more pages than this is a loop, not data


class PagerDutySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = "pagerduty"
    token: SecretStr  # a read-only REST API key (account key, or a bot user's key)
    base_url: str = DEFAULT_BASE_URL
    timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class Shift:
    """One on-call entry: ``user_id`` is on call for ``escalation_policy`` at ``level``, through
    ``schedule`` (None: directly on the policy), from ``start`` to ``end`` (None: permanently)."""

    user_id: str
    escalation_policy: str
    level: int
    schedule: str | None
    start: datetime | None
    end: datetime | None


def _error_text(data: Any) -> str:
    """PagerDuty's error shape: ``{"error": {"code", "message", "errors": [...]}}``."""
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        err = data["error"]
        extra = "; ".join(str(e) for e in err.get("errors") or [])
        return f"{err.get('message', '')} (code {err.get('code')})" + (f": {extra}" if extra else "")
    return ""


def _when(raw: Any) -> datetime | None:
    return datetime.fromisoformat(str(raw).replace("Z", "+00:00")) if raw else None


class PagerDutyClient:
    def __init__(self, name: str, settings: PagerDutySettings, session: aiohttp.ClientSession | None = None) -> None:
        self.name = name
        self._settings = settings
        self._base = settings.base_url.rstrip("/")
        self._session = session
        self._owns_session = session is None
        self.calls = 0  # HTTP requests made (tests count work, not time)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._settings.timeout))
        return self._session

    async def _get(self, path: str, params: list[tuple[str, str]]) -> dict[str, Any]:
        headers = {"Authorization": f"Token token={self._settings.token.get_secret_value()}",
                   "Accept": "application/vnd.pagerduty+json;version=2"}
        self.calls += 1
        status, data, resp_headers = await exchange(self._http(), "GET", self._base + path, name=self.name,
                                                    path=path, params=params, headers=headers)
        if status == 200 and isinstance(data, dict):
            return data
        detail = f"{self.name}: GET {path} -> {status} {_error_text(data)}".strip()
        if status == 200:
            raise Transient(detail + " (not a JSON object)")
        try:
            retry_after = float(resp_headers.get("ratelimit-reset") or resp_headers.get("Retry-After") or 1)
        except ValueError:
            retry_after = 1.0
        err = error_for_status(status, detail, provider="PagerDuty", subject="schedule or user",
                               retry_after=retry_after)
        err.user_message = "PagerDuty could not be asked who is on call."
        raise err

    async def _pages(self, path: str, params: list[tuple[str, str]], key: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        offset = 0
        for _ in range(MAX_PAGES):
            data = await self._get(path, [*params, ("limit", str(PAGE)), ("offset", str(offset))])
            rows = data.get(key)
            if not isinstance(rows, list):
                raise Transient(f"{self.name}: GET {path} answered without {key!r}")
            out.extend(r for r in rows if isinstance(r, dict))
            if not data.get("more") or not rows:
                return out
            offset += len(rows)
        raise ConnectorError(f"{self.name}: GET {path} still had more after {MAX_PAGES} pages")

    async def user_id(self, email: str) -> str | None:
        """The PagerDuty user whose email is ``email`` (compared case-insensitively), or None."""
        wanted = email.strip().lower()
        users = await self._pages("/users", [("query", wanted)], "users")
        return next((str(u["id"]) for u in users if str(u.get("email", "")).lower() == wanted and u.get("id")),
                    None)

    async def on_call(self, email: str, *, at: datetime, schedules: tuple[str, ...] = (),
                      escalation_policies: tuple[str, ...] = ()) -> list[Shift]:
        """The shifts ``email`` is on call in at ``at`` for any of ``schedules`` or ``escalation_policies``.

        PagerDuty combines its filters with AND, so schedules and escalation policies are asked apart.
        """
        uid = await self.user_id(email)
        if uid is None:
            return []
        moment = at.isoformat()
        base = [("user_ids[]", uid), ("since", moment), ("until", moment)]
        found: dict[tuple[str, int, str | None], Shift] = {}
        for key, ids in (("schedule_ids[]", schedules), ("escalation_policy_ids[]", escalation_policies)):
            if not ids:
                continue
            rows = await self._pages("/oncalls", [*base, *((key, i) for i in ids)], "oncalls")
            for row in rows:
                shift = self._shift(row)
                if shift is not None and shift.user_id == uid and (shift.start is None or shift.start <= at) \
                        and (shift.end is None or at < shift.end):
                    found[(shift.escalation_policy, shift.level, shift.schedule)] = shift
        return list(found.values())

    def _shift(self, row: dict[str, Any]) -> Shift | None:
        try:
            schedule = row.get("schedule")
            return Shift(user_id=str(row["user"]["id"]), escalation_policy=str(row["escalation_policy"]["id"]),
                         level=int(row["escalation_level"]),
                         schedule=str(schedule["id"]) if isinstance(schedule, dict) and schedule.get("id") else None,
                         start=_when(row.get("start")), end=_when(row.get("end")))
        except (KeyError, TypeError, ValueError):
            return None  # not an on-call entry we can read: it approves nobody

    # ---- for ``jitbot connectors check`` (bot/governance/context_check.py) ----------------------------
    async def schedule_name(self, schedule_id: str) -> str:
        """The name of schedule ``schedule_id`` (``GET /schedules/{id}``); NotFound when it does not exist."""
        data = await self._get(f"/schedules/{quote(schedule_id, safe='')}", [])
        item = data.get("schedule")
        return str(item.get("name") or item.get("summary") or schedule_id) if isinstance(item, dict) else schedule_id

    async def escalation_policy_name(self, policy_id: str) -> str:
        """The name of escalation policy ``policy_id`` (``GET /escalation_policies/{id}``); NotFound when it
        does not exist."""
        data = await self._get(f"/escalation_policies/{quote(policy_id, safe='')}", [])
        item = data.get("escalation_policy")
        return str(item.get("name") or item.get("summary") or policy_id) if isinstance(item, dict) else policy_id

    async def read_oncalls(self, *, schedules: tuple[str, ...] = (), escalation_policies: tuple[str, ...] = ()) -> int:
        """One page of ``GET /oncalls`` for the given ids (none: the account's): how many entries it holds.
        Raises PermissionDenied when the token may not read on-calls."""
        params = [*(("schedule_ids[]", i) for i in schedules),
                  *(("escalation_policy_ids[]", i) for i in escalation_policies), ("limit", "1")]
        rows = (await self._get("/oncalls", params)).get("oncalls")
        return len(rows) if isinstance(rows, list) else 0

    async def aclose(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None


def from_settings(name: str, settings: dict[str, Any]) -> PagerDutyClient:
    return PagerDutyClient(name, validate_settings(PagerDutySettings, settings, label=f"connector {name!r}"))
