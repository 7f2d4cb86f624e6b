"""Load a policy YAML file: ``${ENV}`` interpolation, schema validation, errors with file:line, risk warnings."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bot.domain.durations import format_duration
from bot.domain.policy import Policy, Principals

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


YamlPath = tuple[str | int, ...]


class PolicyError(Exception):
    """The policy file cannot be used; ``problems`` lists each as ``file:line: path: message``.

    ``data`` (the parsed, interpolated document) and ``lines`` (where each path is in the file) are kept
    when the file was YAML, so that later checks (bot/policy_check.py: the connectors) still run on it."""

    def __init__(self, problems: list[str], *, data: dict[str, Any] | None = None,
                 lines: Mapping[YamlPath, int] | None = None, paths: list[YamlPath] | None = None) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
        self.data = data
        self.lines: Mapping[YamlPath, int] = lines or {}
        self.paths = paths or []  # where each problem is, in the document


@dataclass(frozen=True)
class LoadedPolicy:
    policy: Policy
    path: str
    sha256: str
    raw: dict[str, Any]
    text: str = ""  # the file as read (kept as the last good policy when applied)
    lines: Mapping[YamlPath, int] = field(default_factory=dict, repr=False, compare=False)


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


def _dotted(path: YamlPath, data: Any = None) -> str:
    """``path`` as a reader finds it: ``eligibilities[prod-admin].approvals[0].timeout`` (an eligibility by
    its name when it has one of its own, other list items by index)."""
    out, node = "", data
    for i, part in enumerate(path):
        item = node[part] if isinstance(node, list) and isinstance(part, int) and part < len(node) else None
        if isinstance(part, int):
            name = item.get("name") if path[:i] == ("eligibilities",) and isinstance(item, dict) else None
            unique = sum(isinstance(e, dict) and e.get("name") == name for e in node) == 1
            out += f"[{name}]" if isinstance(name, str) and name and unique else f"[{part}]"
        else:
            out += f".{part}" if out else part
        node = item if isinstance(part, int) else node.get(part) if isinstance(node, dict) else None
    return out or "(top level)"


def _interpolate(value: Any, env: Mapping[str, str], missing: list[tuple[YamlPath, str]], path: YamlPath) -> Any:
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name in env:
                return env[name]
            if f"{name}_FILE" in env:  # a secret mounted as a file (Kubernetes, Docker secrets)
                try:
                    return Path(env[f"{name}_FILE"]).read_text().rstrip("\r\n")
                except OSError as exc:
                    missing.append((path, f"{name}_FILE: cannot read {env[f'{name}_FILE']}: {exc.strerror}"))
                    return ""
            missing.append((path, f"environment variable {name} is not set"))
            return ""
        return _ENV.sub(sub, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, env, missing, (*path, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, missing, (*path, i)) for i, v in enumerate(value)]
    return value


def reference_problems(data: dict[str, Any]) -> list[tuple[YamlPath, str]]:
    """Every cross-reference problem in a policy document, each where it is; the same checks, with the
    same messages, as ``Policy._references`` (which stops at the first and cannot say where). Run on the
    raw document, so that they are reported beside schema errors elsewhere in the file."""
    out: list[tuple[YamlPath, str]] = []
    raw_conns = data.get("connectors")
    conns: dict[str, Any] = raw_conns if isinstance(raw_conns, dict) else {}
    raw_eligs = data.get("eligibilities")
    eligs = [e if isinstance(e, dict) else {} for e in (raw_eligs if isinstance(raw_eligs, list) else [])]
    names = [e.get("name") for e in eligs]
    dupes = sorted({str(n) for n in names if n is not None and names.count(n) > 1})
    if dupes:
        first = next(i for i, n in enumerate(names) if n in names[:i])
        out.append((("eligibilities", first, "name"), f"eligibility names must be unique: {', '.join(dupes)}"))
    for name, conn in conns.items():
        if not isinstance(conn, dict) or "type" not in conn:
            out.append((("connectors", str(name)), f"connector {name!r} needs a 'type'"))
    for i, e in enumerate(eligs):
        if "connector" in e and isinstance(e["connector"], str) and e["connector"] not in conns:
            out.append((("eligibilities", i, "connector"),
                        f"eligibility {e.get('name')!r} uses unknown connector {e['connector']!r}"))
    directory = data.get("directory")
    if isinstance(directory, str) and directory not in conns:
        out.append((("directory",), f"directory names unknown connector {directory!r}"))
    notify = data.get("notify")
    if isinstance(notify, dict) and notify.get("email") and data.get("email") is None:
        out.append((("notify", "email"), "notify.email needs the email (SMTP) settings"))
    accounts = data.get("recovery_accounts")
    for i, account in enumerate(accounts if isinstance(accounts, list) else []):
        if isinstance(account, dict) and isinstance(account.get("connector"), str) \
                and account["connector"] not in conns:
            out.append((("recovery_accounts", i, "connector"), f"recovery account {account.get('email')!r} "
                        f"uses unknown connector {account['connector']!r}"))
    return out


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
    problems = [(path, m) for path, m in missing]
    try:
        policy = Policy.model_validate(resolved)
    except ValidationError as exc:
        references = reference_problems(resolved)
        said = {m for _, m in references}
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            if msg in said:  # the model's own cross-reference check: reported, with its place, below
                continue
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            problems.append((loc or _eligibility_named(msg, resolved), msg))
        problems += references
    if problems:
        raise PolicyError([f"{source}{_at(lines, path)}: {_dotted(path, resolved)}: {m}" for path, m in problems],
                          data=resolved, lines=lines, paths=[path for path, _ in problems])
    return LoadedPolicy(policy, source, hashlib.sha256(text.encode()).hexdigest(), data, text, lines)


def _eligibility_named(message: str, data: Any) -> YamlPath:
    """A policy-wide check's message that names an eligibility (``eligibility 'x' …``): that eligibility's
    place, so that the problem is reported at its line."""
    named = re.match(r"eligibility '([^']*)'", message)
    eligs = data.get("eligibilities") if isinstance(data, dict) else None
    if named and isinstance(eligs, list):
        for i, e in enumerate(eligs):
            if isinstance(e, dict) and e.get("name") == named[1]:
                return ("eligibilities", i)
    return ()


def _at(lines: Mapping[YamlPath, int], path: YamlPath) -> str:
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
    """Risky but valid policy: thin or too wide approver sets, layers only the requester could approve, long
    durations.

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
            if len(approvers) > policy.settings.warn_max_approvers:  # each is DMed: live_check.py says it online
                out.append(f"{e.name}: layer {i} asks {len(approvers)} approvers by DM for every request (more "
                           f"than settings.warn_max_approvers, {policy.settings.warn_max_approvers}); ask a "
                           "smaller group (an on-call rota) or post the ask to an approver channel instead "
                           "(approvers: {channel: ...})")
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


def memory_group_warnings(policy: Policy) -> list[str]:
    """Groups (and roles) the policy names that a ``type: memory`` connector it uses does not declare:
    a target there cannot be granted, and people in a missing directory group are nobody."""
    memory = {name: conf for name, conf in policy.connectors.items() if conf.get("type") == "memory"}
    out: list[str] = []
    for e in policy.eligibilities:
        conf = memory.get(e.connector)
        if conf is None:
            continue
        declared = (conf.get("groups") or {}) if e.target.kind == "group" else (conf.get("roles") or [])
        if e.target.ref not in declared:
            out.append(f"{e.name}: target {e.target.kind} {e.target.ref!r} does not exist on the memory connector "
                       f"{e.connector!r} (grants would fail)")
    directory = policy.directory_connector
    if directory not in memory:
        return out
    groups = set((memory[directory].get("groups") or {}).keys())
    named: list[tuple[str, Principals | None]] = [("admins", policy.admins)]
    for e in policy.eligibilities:
        named += [(f"{e.name}: requestors", e.requestors), (f"{e.name}: delegates", e.delegates)]
        for i, layer in enumerate(e.approvals, start=1):
            named += [(f"{e.name}: layer {i} approvers", layer.approvers),
                      (f"{e.name}: layer {i} escalation", layer.escalation),
                      (f"{e.name}: layer {i} after_hours", layer.after_hours)]
        if e.transition is not None:
            named.append((f"{e.name}: transition.keep_standing", e.transition.keep_standing))
    for where, principals in named:
        for group in principals.groups if principals is not None else ():
            if group not in groups:
                out.append(f"{where}: group {group!r} does not exist on the memory connector {directory!r} "
                           "(nobody is in it)")
    return out
