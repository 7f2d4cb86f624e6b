"""``jitbot policy validate``: every problem of a policy file, its connectors' settings included, and its
risk warnings. ``policy check`` without ``--live``, ``plan`` and ``apply`` start with the same checks.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import yaml
from pydantic import ValidationError

from bot.cli_support import err
from bot.domain.display_limits import display_warnings
from bot.policy_file import LoadedPolicy, PolicyError, load_policy, memory_directory, risk_warnings
from connectors.base import ConnectorError
from connectors.registry import build_connector


def _connector_lines(path: str) -> dict[str, int]:
    """The line of each connector's key in the policy file, for error messages."""
    try:
        root = yaml.compose(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    for key, value in root.value if isinstance(root, yaml.MappingNode) else []:
        if key.value == "connectors" and isinstance(value, yaml.MappingNode):
            return {k.value: k.start_mark.line + 1 for k, _ in value.value}
    return {}


def connector_problems(loaded: LoadedPolicy) -> list[str]:
    """Build each connector offline, so that bad connector settings fail validation, not the first request."""
    keys = _connector_lines(loaded.path)

    async def build_all() -> list[str]:
        problems = []
        for name, settings in loaded.policy.connectors.items():
            try:
                connector = build_connector(name, settings)
            except (ConnectorError, ValidationError) as exc:
                where = f"{loaded.path}:{keys[name]}" if name in keys else loaded.path
                problems.append(f"{where}: connectors.{name}: {' '.join(str(exc).split())}")
            else:
                await connector.aclose()
        return problems

    return asyncio.run(build_all())


def cmd_policy_validate(args: argparse.Namespace) -> int:
    try:
        loaded = load_policy(args.file)
        problems = connector_problems(loaded)
    except PolicyError as exc:
        problems = exc.problems
    if problems:
        for problem in problems:
            err(problem)
        err(f"{args.file}: invalid ({len(problems)} problem{'s' if len(problems) != 1 else ''})")
        return 1
    policy = loaded.policy
    warnings = risk_warnings(policy, memory_directory(policy)) + display_warnings(policy)
    for warning in warnings:
        err(f"warning: {args.file}: {warning}")
    print(f"{args.file}: valid ({len(policy.eligibilities)} eligibilities, {len(policy.connectors)} connectors, "
          f"{len(warnings)} warning{'s' if len(warnings) != 1 else ''})")
    return 1 if args.strict and warnings else 0
