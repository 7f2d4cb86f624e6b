"""Load a policy YAML file: ``${ENV}`` interpolation, schema validation, errors with file:line, risk warnings."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bot.domain.durations import format_duration
from bot.domain.policy import Policy, Principals

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class PolicyError(Exception):
    """The policy file cannot be used; ``problems`` lists each as ``file:line: path: message``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class LoadedPolicy:
    policy: Policy
    path: str
    sha256: str
    raw: dict[str, Any]
    text: str = ""  # the file as read (kept as the last good policy when applied)


YamlPath = tuple[str | int, ...]


def _line_map(node: yaml.Node, path: YamlPath, out: dict[YamlPath, int]) -> None:
    # A key's own line wins over where its (block) value starts on the next line.
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            out[(*path, str(key.value))] = key.start_mark.line + 1
            _line_map(value, (*path, str(key.value)), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, (*path, i), out)


def _dotted(path: YamlPath) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _interpolate(value: Any, env: Mapping[str, str], missing: list[tuple[YamlPath, str]], path: YamlPath) -> Any:
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in env:
                missing.append((path, f"environment variable {name} is not set"))
                return ""
            return env[name]
        return _ENV.sub(sub, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, env, missing, (*path, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, missing, (*path, i)) for i, v in enumerate(value)]
    return value


def _locate_reference(message: str, data: dict[str, Any]) -> YamlPath:
    """Where a cross-reference error raised by ``Policy`` (which has no location of its own) points."""
    raw_conns = data.get("connectors")
    conns: dict[str, Any] = raw_conns if isinstance(raw_conns, dict) else {}
    eligs = [e if isinstance(e, dict) else {} for e in data.get("eligibilities") or []]
    if "needs a connector of type" in message:  # an approval-context rule (pagerduty / jira) names it
        named = re.match(r"eligibility '([^']*)'", message)
        return next((("eligibilities", i) for i, e in enumerate(eligs) if named and e.get("name") == named[1]), ())
    if "uses unknown connector" in message:
        return next((("eligibilities", i, "connector") for i, e in enumerate(eligs)
                     if e.get("connector") not in conns), ())
    if "needs a 'type'" in message:
        return next((("connectors", n) for n, c in conns.items() if not isinstance(c, dict) or "type" not in c), ())
    if "must be unique" in message:
        names = [e.get("name") for e in eligs]
        return next((("eligibilities", i, "name") for i, n in enumerate(names) if n in names[:i]), ())
    if message.startswith("directory names unknown connector"):
        return ("directory",)
    return ()


def parse_policy(text: str, *, source: str = "policy.yml", env: Mapping[str, str] | None = None) -> LoadedPolicy:
    """Parse and validate policy text; raise PolicyError naming file, line, path and problem."""
    env = os.environ if env is None else env
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise PolicyError([f"{source}{line}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from None
    if not isinstance(data, dict):
        raise PolicyError([f"{source}: the policy must be a mapping with audit_channel, connectors, eligibilities"])
    lines: dict[YamlPath, int] = {}
    if root is not None:
        _line_map(root, (), lines)
    missing: list[tuple[YamlPath, str]] = []
    resolved = _interpolate(data, env, missing, ())
    if missing:
        raise PolicyError([f"{source}{_at(lines, path)}: {_dotted(path)}: {m}" for path, m in missing])
    try:
        policy = Policy.model_validate(resolved)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            msg = err["msg"].removeprefix("Value error, ")
            loc = loc or _locate_reference(msg, resolved)
            problems.append(f"{source}{_at(lines, loc)}: {_dotted(loc)}: {msg}")
        raise PolicyError(problems) from None
    return LoadedPolicy(policy, source, hashlib.sha256(text.encode()).hexdigest(), data, text)


def _at(lines: dict[YamlPath, int], path: YamlPath) -> str:
    """``:line`` of ``path``, or of its nearest ancestor that has one."""
    line = next((lines[path[:i]] for i in range(len(path), -1, -1) if path[:i] in lines), None)
    return f":{line}" if line else ""


def load_policy(path: str | Path, *, env: Mapping[str, str] | None = None) -> LoadedPolicy:
    """Read and validate the policy file at ``path``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError([f"{p}: cannot read the policy file: {exc.strerror}"]) from None
    return parse_policy(text, source=str(p), env=env)


def risk_warnings(policy: Policy, members: Mapping[str, set[str]] | None = None) -> list[str]:
    """Risky but valid policy: thin approver sets, layers only the requester could approve, long durations.

    ``members`` maps a directory group to its member emails, when known (memory connectors, or live).
    """
    members = members or {}
    out: list[str] = []

    def people(p: Principals) -> set[str] | None:
        found = set(p.users)
        for g in p.groups:
            if g not in members:
                return None
            found |= {m.lower() for m in members[g]}
        return found

    for e in policy.eligibilities:
        if e.max_duration > policy.settings.max_duration_ceiling:
            out.append(f"{e.name}: max_duration {format_duration(e.max_duration)} is above the ceiling "
                       f"{format_duration(policy.settings.max_duration_ceiling)}")
        requestors = people(e.requestors)
        if not e.approvals:
            out.append(f"{e.name}: no approval layers — requests are approved automatically")
        for i, layer in enumerate(e.approvals, start=1):
            approvers = people(layer.approvers)
            if approvers is None:
                continue
            if len(approvers) < policy.settings.warn_min_approvers:
                out.append(f"{e.name}: layer {i} has {len(approvers)} approver(s); fewer than "
                           f"{policy.settings.warn_min_approvers} is a single point of failure")
            if requestors is not None and requestors and all(approvers - {r} == set() for r in requestors):
                out.append(f"{e.name}: layer {i} has no approver who is not also the requester")
            elif requestors is not None and any(len(approvers - {r}) < layer.min_approvals for r in requestors):
                out.append(f"{e.name}: layer {i} cannot reach min_approvals={layer.min_approvals} "
                           "for some requesters once they are excluded")
    return out


def memory_directory(policy: Policy) -> dict[str, set[str]]:
    """Group members declared by ``type: memory`` connectors (for offline risk warnings)."""
    out: dict[str, set[str]] = {}
    for conf in policy.connectors.values():
        if conf.get("type") == "memory":
            for group, emails in (conf.get("groups") or {}).items():
                out.setdefault(group, set()).update(e.lower() for e in emails)
    return out
