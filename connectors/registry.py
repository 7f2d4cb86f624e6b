"""Connector types by name: ``type: okta`` in the policy → ``connectors.okta.from_settings``."""

from __future__ import annotations

import importlib
from typing import Any

from connectors.base import ConfigError, Connector
from connectors.memory import MembershipStore, MemoryConnector

# type name → module; each module exposes ``from_settings(name: str, settings: dict) -> Connector``.
CONNECTOR_MODULES: dict[str, str] = {
    "okta": "connectors.okta",
    "entra": "connectors.entra_pim",  # entra, or with expiry_backstop its subclass
    "google": "connectors.google_expiry",  # google_workspace, or with expiry_backstop its subclass
    "onelogin": "connectors.onelogin",
    "pingone": "connectors.pingone",
}


WRAPPER_KEYS = ("rate_per_second", "max_concurrency")


def known_types() -> list[str]:
    return ["memory", *CONNECTOR_MODULES]


def build_connector(name: str, settings: dict[str, Any], *, store: MembershipStore | None = None) -> Connector:
    """Build the connector called ``name`` from its policy settings (``type`` selects the provider)."""
    # Pacing keys (rate_per_second, max_concurrency) configure the resilience wrapper, not the provider.
    settings = {k: v for k, v in settings.items() if k not in WRAPPER_KEYS}
    kind = str(settings.get("type", ""))
    if kind == "memory":
        return MemoryConnector.from_settings(name, settings, store)
    module_name = CONNECTOR_MODULES.get(kind)
    if module_name is None:
        raise ConfigError(f"connector {name!r}: unknown type {kind!r} (known: {', '.join(known_types())})")
    module = importlib.import_module(module_name)
    connector: Connector = module.from_settings(name, settings)
    return connector
