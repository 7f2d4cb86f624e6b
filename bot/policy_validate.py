"""``jitbot policy validate``: every problem of a policy file (bot/policy_check.py: schema, cross-references,
its connectors' settings), then its risk and display warnings. ``policy check`` without ``--live``, ``plan``
and ``apply`` start with the same checks.
"""

from __future__ import annotations

import argparse

from bot.cli_support import err
from bot.domain.display_limits import display_warnings
from bot.policy_check import check_policy_now
from bot.policy_file import PolicyError, memory_directory, memory_group_warnings, risk_warnings


def cmd_policy_validate(args: argparse.Namespace) -> int:
    try:
        loaded = check_policy_now(args.file)
    except PolicyError as exc:
        for problem in exc.problems:
            err(problem)
        err(f"{args.file}: invalid ({len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''})")
        return 1
    policy = loaded.policy
    warnings = (memory_group_warnings(policy) + risk_warnings(policy, memory_directory(policy))
                + display_warnings(policy))
    for warning in warnings:
        err(f"warning: {args.file}: {warning}")
    print(f"{args.file}: valid ({len(policy.eligibilities)} eligibilities, {len(policy.connectors)} connectors, "
          f"{len(warnings)} warning{'s' if len(warnings) != 1 else ''})")
    return 1 if args.strict and warnings else 0
