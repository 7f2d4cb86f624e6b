"""The difference between the applied policy and a policy file, as data, rendered like a Terraform plan.

Pure: it compares plain JSON-able dicts (an eligibility's ``model_dump(mode="json")``), so the applied
side can come straight from the database.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bot.domain.policy import Policy
from bot.policy_file import LoadedPolicy


@dataclass(frozen=True)
class Change:
    path: str
    old: Any
    new: Any


@dataclass(frozen=True)
class EligibilityPlan:
    name: str
    action: str  # create | update | delete
    changes: tuple[Change, ...]


@dataclass(frozen=True)
class Plan:
    eligibilities: tuple[EligibilityPlan, ...]
    settings: tuple[Change, ...]

    @property
    def has_changes(self) -> bool:
        return bool(self.eligibilities or self.settings)

    def count(self, action: str) -> int:
        return sum(1 for e in self.eligibilities if e.action == action)

    def to_json(self) -> dict[str, Any]:
        """The plan as the ``policy_applied`` audit event records it."""
        return {
            "eligibilities": [{"name": e.name, "action": e.action,
                               "changes": [{"path": c.path, "old": c.old, "new": c.new} for c in e.changes]}
                              for e in self.eligibilities],
            "settings": [{"path": c.path, "old": c.old, "new": c.new} for c in self.settings],
        }

    def summary(self) -> str:
        parts = [f"{self.count('create')} to add", f"{self.count('update')} to change",
                 f"{self.count('delete')} to destroy"]
        if self.settings:
            parts.append(f"{len(self.settings)} policy setting(s) changed")
        return ", ".join(parts)


def definitions(policy: Policy) -> dict[str, dict[str, Any]]:
    """Each eligibility as stored in the ``eligibility`` table."""
    return {e.name: e.model_dump(mode="json") for e in policy.eligibilities}


def global_settings(loaded: LoadedPolicy) -> dict[str, Any]:
    """Everything but the eligibilities. Connectors come from the raw file: ``${VAR}`` stays unexpanded,
    so no secret read from the environment is ever stored or printed."""
    dumped = loaded.policy.model_dump(mode="json", exclude={"eligibilities", "connectors", "context_connectors"})
    dumped["connectors"] = loaded.raw.get("connectors") or {}
    return dict(json.loads(json.dumps(dumped, default=str)))


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "approvals": [{"x": 2}]}`` → ``{"a.b": 1, "approvals[1].x": 2}``; lists of plain
    values stay whole (they read best as one line)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out if out or not prefix else {prefix: {}}
    if isinstance(value, list) and any(isinstance(v, dict) for v in value):
        out = {}
        for i, item in enumerate(value, start=1):
            out.update(flatten(item, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def diff_values(old: Any, new: Any) -> tuple[Change, ...]:
    a, b = flatten(old), flatten(new)
    return tuple(Change(p, a.get(p), b.get(p)) for p in sorted(set(a) | set(b), key=_path_order(a, b))
                 if a.get(p) != b.get(p))


def _path_order(a: dict[str, Any], b: dict[str, Any]) -> Any:
    order = {p: i for i, p in enumerate([*b, *(p for p in a if p not in b)])}
    return lambda p: order[p]


def make_plan(applied: dict[str, dict[str, Any]], applied_settings: dict[str, Any] | None,
              loaded: LoadedPolicy) -> Plan:
    """What applying ``loaded`` would change, given the applied eligibilities and settings."""
    wanted = definitions(loaded.policy)
    out = []
    for name, definition in wanted.items():
        if name not in applied:
            out.append(EligibilityPlan(name, "create", diff_values({}, definition)))
        elif (changes := diff_values(applied[name], definition)):
            out.append(EligibilityPlan(name, "update", changes))
    out += [EligibilityPlan(name, "delete", diff_values(applied[name], {}))
            for name in sorted(applied) if name not in wanted]
    settings = diff_values(applied_settings, global_settings(loaded)) if applied_settings is not None else ()
    return Plan(tuple(out), settings)


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def render(plan: Plan) -> str:
    """Terraform-style text: ``+`` created, ``~`` changed, ``-`` destroyed."""
    if not plan.has_changes:
        return "No changes. The applied policy matches the file."
    lines = ["jitbot will perform the following actions:", ""]
    verbs = {"create": ("+", "will be created"), "update": ("~", "will be updated in place"),
             "delete": ("-", "will be destroyed")}
    for e in plan.eligibilities:
        sign, verb = verbs[e.action]
        lines.append(f"  {sign} eligibility \"{e.name}\" {verb}")
        for c in e.changes:
            if e.action == "create":
                lines.append(f"      + {c.path} = {_show(c.new)}")
            elif e.action == "update":
                lines.append(f"      ~ {c.path}: {_show(c.old)} → {_show(c.new)}")
        lines.append("")
    for c in plan.settings:
        lines.append(f"  ~ policy {c.path}: {_show(c.old)} → {_show(c.new)}")
    if plan.settings:
        lines.append("")
    lines.append(f"Plan: {plan.summary()}.")
    return "\n".join(lines)
