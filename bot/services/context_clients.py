"""The PagerDuty and Jira clients named by the policy's ``connectors:`` (types ``pagerduty`` and ``jira``).

Built when first used and rebuilt when the policy changes their settings (a reload), so a reloaded
policy never talks to a vendor with stale credentials. ``aclose`` closes whatever was built.
"""

from __future__ import annotations

import json
from typing import Any

from connectors import jira, pagerduty
from connectors.base import ConfigError


class ContextClients:
    def __init__(self) -> None:
        self._built: dict[str, tuple[str, Any]] = {}  # name → (settings fingerprint, client)
        self._retired: list[Any] = []

    def _client(self, settings_by_name: dict[str, dict[str, Any]], name: str, kind: str) -> Any:
        settings = settings_by_name.get(name)
        if settings is None or settings.get("type") != kind:
            raise ConfigError(f"there is no {kind} connector called {name!r}")
        fingerprint = json.dumps(settings, sort_keys=True, default=str)
        held = self._built.get(name)
        if held is not None and held[0] == fingerprint:
            return held[1]
        if held is not None:
            self._retired.append(held[1])
        client = (pagerduty.from_settings if kind == "pagerduty" else jira.from_settings)(name, settings)
        self._built[name] = (fingerprint, client)
        return client

    def pagerduty(self, settings_by_name: dict[str, dict[str, Any]], name: str) -> pagerduty.PagerDutyClient:
        client: pagerduty.PagerDutyClient = self._client(settings_by_name, name, "pagerduty")
        return client

    def jira(self, settings_by_name: dict[str, dict[str, Any]], name: str) -> jira.JiraClient:
        client: jira.JiraClient = self._client(settings_by_name, name, "jira")
        return client

    async def aclose(self) -> None:
        for client in [*self._retired, *(c for _, c in self._built.values())]:
            await client.aclose()
        self._built.clear()
        self._retired.clear()
