"""Jira Cloud REST API v3, read only: one issue's summary, status and project
(``GET /rest/api/3/issue/{key}?fields=summary,status,project``), with basic auth (account email + API
token). Used for ticket checks (bot/services/context/tickets.py).

Plain aiohttp, not the ``jira`` package: that one is built on ``requests`` (blocking) and reads the
server's info on connect; one GET is all jitbot needs.

Reference: Jira Cloud platform REST API v3 OpenAPI (swagger-v3.v3.json; the operation used is vendored in
tests/specs/jira_platform_v3_subset.json), https://developer.atlassian.com/cloud/jira/platform/basic-auth-for-rest-apis/
and https://developer.atlassian.com/cloud/jira/platform/rate-limiting/ (429 with ``Retry-After`` seconds).
A 404 means the issue does not exist *or* the account may not browse it: both are "unknown ticket".
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from connectors.base import ConnectorError, Transient
from connectors.rest import error_for_status, exchange, validate_settings

ISSUE_KEY = re.compile(r"^[A-Z][A-Z0-9_]{0,254}-[1-9][0-9]{0,17}$")  # PROJECT-123 (Jira project key rules)


class JiraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = "jira"
    base_url: str  # https://your-domain.atlassian.net
    email: str  # the Atlassian account the API token belongs to
    api_token: SecretStr
    timeout: float = 5.0
    poll_every: str = Field(default="1m", pattern=r"^\d+[smh]$")  # how often end_with_ticket grants are checked

    @property
    def poll_interval(self) -> timedelta:
        amount, unit = int(self.poll_every[:-1]), self.poll_every[-1]
        return max(timedelta(seconds=amount * {"s": 1, "m": 60, "h": 3600}[unit]), timedelta(seconds=1))


@dataclass(frozen=True, slots=True)
class Issue:
    key: str
    summary: str
    status: str
    project: str
    url: str  # the issue in Jira's web UI

    def as_context(self) -> dict[str, str]:
        return {"key": self.key, "summary": self.summary, "status": self.status, "project": self.project,
                "url": self.url}


def _error_text(data: Any) -> str:
    """Jira's ErrorCollection: ``{"errorMessages": [...], "errors": {field: message}}``."""
    if isinstance(data, dict):
        parts = [str(m) for m in data.get("errorMessages") or []]
        parts += [f"{k}: {v}" for k, v in (data.get("errors") or {}).items()]
        return "; ".join(parts)
    return ""


class JiraClient:
    def __init__(self, name: str, settings: JiraSettings, session: aiohttp.ClientSession | None = None) -> None:
        self.name = name
        self.settings = settings
        self._base = settings.base_url.rstrip("/")
        self._session = session
        self._owns_session = session is None
        self.calls = 0

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.settings.timeout))
        return self._session

    async def _get(self, path: str, params: dict[str, str] | None = None, *,
                   subject: str = "ticket") -> tuple[int, Any]:
        """``GET path``: (200 or 404, the answer); any other status raises the typed error."""
        pair = f"{self.settings.email}:{self.settings.api_token.get_secret_value()}"
        headers = {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode("ascii"),
                   "Accept": "application/json"}
        self.calls += 1
        status, data, resp_headers = await exchange(self._http(), "GET", self._base + path, name=self.name,
                                                    path=path, params=params or {}, headers=headers)
        if status in (200, 404):
            return status, data
        detail = f"{self.name}: GET {path} -> {status} {_error_text(data)}".strip()
        try:
            retry_after = float(resp_headers.get("Retry-After") or 1)
        except ValueError:
            retry_after = 1.0
        err = error_for_status(status, detail, provider="Jira", subject=subject, retry_after=retry_after)
        err.user_message = f"Jira could not be asked about the {subject}."
        raise err

    async def issue(self, key: str) -> Issue | None:
        """The issue ``key`` (None when Jira does not know it, or the account may not see it)."""
        key = key.strip().upper()
        if not ISSUE_KEY.fullmatch(key):
            return None
        path = f"/rest/api/3/issue/{quote(key)}"
        status, data = await self._get(path, {"fields": "summary,status,project"})
        if status == 200 and isinstance(data, dict):
            try:
                fields = data["fields"]
                return Issue(key=str(data["key"]), summary=str(fields.get("summary") or ""),
                             status=str(fields["status"]["name"]), project=str(fields["project"]["key"]),
                             url=f"{self._base}/browse/{quote(str(data['key']))}")
            except (KeyError, TypeError) as exc:
                raise Transient(f"{self.name}: GET {path} answered an issue without {exc}") from None
        if status == 200:
            raise Transient(f"{self.name}: GET {path} answered something other than an issue")
        return None

    # ---- for ``jitbot connectors check`` (bot/governance/context_check.py) ----------------------------
    async def myself(self) -> str:
        """Who the credentials sign in as (``GET /rest/api/3/myself``): the display name, else the account
        id. A 404 here is not Jira's answer to valid credentials: a ConnectorError."""
        status, data = await self._get("/rest/api/3/myself", subject="account")
        if status == 200 and isinstance(data, dict):
            return str(data.get("displayName") or data.get("accountId") or "")
        raise ConnectorError(f"{self.name}: GET /rest/api/3/myself -> {status}: is base_url a Jira Cloud site?")

    async def project(self, key: str) -> str | None:
        """The name of project ``key`` (``GET /rest/api/3/project/{key}``), or None when it does not exist or
        the account may not browse it (Jira answers 404 for both)."""
        status, data = await self._get(f"/rest/api/3/project/{quote(key, safe='')}", subject="project")
        if status == 200 and isinstance(data, dict):
            return str(data.get("name") or key)
        if status == 200:
            raise Transient(f"{self.name}: GET /rest/api/3/project/{key} answered something other than a project")
        return None

    async def project_statuses(self, key: str) -> set[str] | None:
        """Every status name of project ``key``'s issue types (``GET /rest/api/3/project/{key}/statuses``),
        or None when Jira answers 404."""
        path = f"/rest/api/3/project/{quote(key, safe='')}/statuses"
        status, data = await self._get(path, subject="project")
        if status == 404:
            return None
        if not isinstance(data, list):
            raise Transient(f"{self.name}: GET {path} answered something other than a list of issue types")
        return {str(st["name"]) for it in data if isinstance(it, dict) for st in it.get("statuses") or []
                if isinstance(st, dict) and st.get("name")}

    async def aclose(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None


def from_settings(name: str, settings: dict[str, Any]) -> JiraClient:
    return JiraClient(name, validate_settings(JiraSettings, settings, label=f"connector {name!r}"))
