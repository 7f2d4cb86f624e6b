"""The ``policy plan|apply|check``, ``report``, ``transition`` and ``discover`` subcommands of ``jitbot``.

Registered by bot/cli.py; every command is imported only when it runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bot.cli_support import lazy_command as _lazy
from bot.cli_support import parse_since


def register(add: Callable[..., argparse.ArgumentParser], sub: Any, pol_sub: Any) -> None:
    gov, rep, tra = "bot.governance.commands", "bot.reports.commands", "bot.governance.transition_commands"
    p = add(pol_sub, "plan", "Show what applying FILE would change (exit 0 none, 2 changes or drift, 1 error).",
            _lazy(gov, "cmd_policy_plan"), database=True)
    p.add_argument("file", metavar="FILE")
    p = add(pol_sub, "apply", "Apply FILE to the database (audited: file hash, who, when, the diff).",
            _lazy(gov, "cmd_policy_apply"), database=True)
    p.add_argument("file", metavar="FILE")
    p.add_argument("--actor", help="who applies it (default: $USER)")
    p = add(pol_sub, "check", "Validate FILE; with --live also check every group, role and user at its IdP.",
            _lazy(gov, "cmd_policy_check"))
    p.add_argument("file", metavar="FILE")
    p.add_argument("--live", action="store_true", help="ask the identity providers (exit 1 on problems)")

    report = add(sub, "report", "Access reviews and risk-reduction reports.")
    rep_sub = report.add_subparsers(dest="report_command", required=True, metavar="ACTION")
    since: dict[str, Any] = {
        "metavar": "WHEN", "type": lambda s: parse_since(s, now=datetime.now(UTC)),
        "help": "period start: a date, a timestamp or a duration ago (default: the policy's reports.period)"}
    p = add(rep_sub, "review", "Per-eligibility use, unused eligibilities, habitual requesters, slow layers, "
            "risk reduction.", _lazy(rep, "cmd_report_review"), policy=True, database=True)
    p.add_argument("--since", **since)
    p.add_argument("--format", choices=["md", "csv", "json"], default="md")
    p.add_argument("--unused-days", type=int, default=30, metavar="N", help="unused for N days (default 30)")
    p.add_argument("--output", metavar="FILE", help="write here instead of standard output")
    p = add(rep_sub, "chart", "Write a PNG of granted hours per week against the standing baseline.",
            _lazy(rep, "cmd_report_chart"), policy=True, database=True)
    p.add_argument("--since", **since)
    p.add_argument("--unused-days", type=int, default=30, help=argparse.SUPPRESS)
    p.add_argument("--output", metavar="FILE", required=True)

    transition = add(sub, "transition", "Move targets off standing (static) access.")
    tra_sub = transition.add_subparsers(dest="transition_command", required=True, metavar="ACTION")
    p = add(tra_sub, "status", "Standing members of each transitioning target, with their last JIT use.",
            _lazy(tra, "cmd_transition_status"), policy=True, database=True)
    p.add_argument("--all", action="store_true", help="every eligibility, not only those with a transition")
    p = add(tra_sub, "revert", "Show the standing members a cut-over removed; with --apply, re-add them.",
            _lazy(tra, "cmd_transition_revert"), policy=True, database=True)
    p.add_argument("eligibility", metavar="ELIGIBILITY")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--apply", action="store_true", help="restore them (default: only show who would be restored)")
    mode.add_argument("--dry-run", action="store_true", help=argparse.SUPPRESS)  # the default; kept as an alias
    p.add_argument("--actor", help="who reverts (default: $USER)")

    p = add(sub, "discover", "Groups at the identity providers: member counts, JIT coverage, and privileged-looking "
            "groups with standing members (candidates for JIT).", _lazy("bot.governance.discover", "cmd_discover"),
            policy=True, database=True)
    p.add_argument("--connector", metavar="NAME", help="only this connector (default: every one)")
    p.add_argument("--candidates", action="store_true", help="only the candidates for JIT")
    p.add_argument("--json", action="store_true", help="machine-readable output")
