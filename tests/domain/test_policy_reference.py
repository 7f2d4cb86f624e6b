"""docs/policy.md documents every key the policy accepts: each field of the policy model (and of each
connector type's settings model) has a row in the reference's tables."""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bot.domain.approval_context import AutoApproveWhen, JiraTicket, OnCall, PagerDutyOnCall, TicketRequirement
from bot.domain.policy import (
    ApprovalLayer,
    BreakGlass,
    BusinessHours,
    Eligibility,
    Extension,
    LayerApprovers,
    Policy,
    Principals,
    TargetSpec,
    Transition,
)
from bot.domain.policy_sections import Bundles, Email, EventSink, Notify, RecoveryAccount, Reports, Settings
from bot.domain.step_up import OidcProvider, StepUp
from connectors.entra import EntraSettings
from connectors.google_workspace import GoogleWorkspaceConfig
from connectors.memory import MemoryConfig
from connectors.okta import OktaSettings
from connectors.onelogin import OneLoginConfig
from connectors.pingone import PingOneConfig
from connectors.registry import WRAPPER_KEYS, known_types

DOC = (Path(__file__).resolve().parents[2] / "docs" / "policy.md").read_text(encoding="utf-8")
CONNECTOR_MODELS: dict[str, type[BaseModel]] = {
    "okta": OktaSettings, "entra": EntraSettings, "google": GoogleWorkspaceConfig, "onelogin": OneLoginConfig,
    "pingone": PingOneConfig, "memory": MemoryConfig}


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The models inside a field's type (``X | None``, ``tuple[X, ...]``, ``Annotated[...]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, tuple, list, dict, typing.Annotated):
        return [m for a in args for m in _models(a)]
    return []


def _keys(model: type[BaseModel], path: str, seen: set[type[BaseModel]]) -> list[tuple[type[BaseModel], str, str]]:
    """(model, dotted path, key as written in YAML) for every field of ``model`` and of the models below."""
    out = []
    for name, info in model.model_fields.items():
        key = info.alias or name
        out.append((model, f"{path}{key}", key))
        for sub in _models(info.annotation):
            if sub not in seen:
                out += _keys(sub, f"{path}{key}.", seen | {sub})
    return out


def _table_keys(text: str) -> set[str]:
    """Every `key` in the first cell of a table row."""
    cells = [line.split("|")[1] for line in text.splitlines() if line.startswith("| ") and line.count("|") > 2]
    return {k for cell in cells for k in re.findall(r"`([^`]+)`", cell)}


def _sections(text: str) -> dict[str, str]:
    """Each heading (lower case, without backticks) → the text up to the next heading."""
    parts = re.split(r"^#{2,4} (.+)$", text, flags=re.MULTILINE)
    return {title.replace("`", "").strip().lower(): body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


ON_CALL = "on-call approval (pagerduty)"
# Where each part of the model is documented: the section (heading) whose tables list its keys.
SECTION = {Policy: "top level", Principals: "principals", Settings: "settings", Eligibility: "eligibilities",
           ApprovalLayer: "approval layers", TargetSpec: "target", Extension: "extension",
           BreakGlass: "break_glass", Transition: "transition", BusinessHours: "business_hours", Reports: "reports",
           Email: "email", Notify: "notify", RecoveryAccount: "recovery_accounts",
           TicketRequirement: "jira tickets", JiraTicket: "jira tickets", StepUp: "step_up", OidcProvider: "step_up",
           LayerApprovers: "approver channels",
           AutoApproveWhen: ON_CALL, OnCall: ON_CALL, PagerDutyOnCall: ON_CALL, EventSink: "event_sinks",
           Bundles: "several items in one request (ad-hoc bundles)"}


def test_the_model_walk_finds_nested_keys() -> None:
    paths = {path for _, path, _ in _keys(Policy, "", {Policy})}
    assert {"eligibilities.transition.static_access_until", "eligibilities.approvals.escalation.groups",
            "email.from", "reports.cron", "business_hours.days"} <= paths


def test_every_policy_key_has_a_row_in_its_section_of_the_reference() -> None:
    sections = _sections(DOC)
    missing = []
    for model, path, key in _keys(Policy, "", {Policy}):
        assert model in SECTION, f"{model.__name__} is new: say in SECTION where docs/policy.md documents it"
        if key not in _table_keys(sections.get(SECTION[model], "")):
            missing.append(f"{path} (section '{SECTION[model]}')")
    assert missing == [], f"docs/policy.md has no table row for: {', '.join(missing)}"


def test_every_connector_setting_is_named_in_its_row_of_the_connectors_table() -> None:
    assert set(CONNECTOR_MODELS) == set(known_types())
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `([a-z]+)` \|(.*)\|$", DOC, re.MULTILINE)}
    missing = []
    for kind, model in CONNECTOR_MODELS.items():
        named = set(re.findall(r"`([^`]+)`", rows.get(kind, "")))
        missing += [f"{kind}.{path}" for _, path, key in _keys(model, "", {model}) if key not in named | {"type"}]
    assert missing == [], f"docs/policy.md's connectors table does not name: {', '.join(missing)}"
    assert all(f"`{k}`" in DOC for k in WRAPPER_KEYS)
