"""The ``jitbot`` command line.

Exit codes: 0 success; 1 the command ran and found a problem (invalid policy, broken audit chain,
failed connector check, unreachable database); 2 bad arguments or unusable configuration.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlmodel import col

from bot import __version__

# The shared helpers under the names this module's commands use; other modules import them from
# bot.cli_support.
from bot.cli_support import CliError, parse_since
from bot.cli_support import err as _err
from bot.cli_support import lazy_command as _lazy
from bot.cli_support import run_db as _run_db
from bot.cli_support import table as _table
from bot.domain.durations import format_duration
from bot.domain.policy import Eligibility, Principals
from bot.governance.parser import register as register_governance
from bot.policy_file import PolicyError, load_policy
from bot.policy_validate import cmd_policy_validate
from bot.settings import SettingsError, load_settings
from storage.db import Database
from storage.tables import AccessRequest, Grant

__all__ = ["CliError", "build_parser", "cmd_policy_validate", "main", "parse_since"]

log = logging.getLogger("jitbot")


# --- policy ------------------------------------------------------------------------------------------


def _who(p: Principals) -> str:
    return ", ".join([*(f"@{g}" for g in p.groups), *p.users]) or "-"


def _layers(e: Eligibility) -> str:
    if not e.approvals:
        return "auto-approved"
    return " → ".join(f"{i}: {_who(layer.approvers)} ×{layer.min_approvals} ({format_duration(layer.timeout)})"
                      for i, layer in enumerate(e.approvals, start=1))


def cmd_policy_show(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(args.file).policy
    except PolicyError as exc:
        for problem in exc.problems:
            _err(problem)
        return 1
    connectors = ", ".join(f"{n} ({c.get('type')})" for n, c in policy.connectors.items())
    print(f"audit channel: {policy.audit_channel}    admins: {_who(policy.admins)}    connectors: {connectors}\n")
    rows = [[e.name, f"{e.connector}:{e.target.kind}:{e.target.ref}", _who(e.requestors),
             format_duration(e.default), format_duration(e.max_duration), format_duration(e.warn_before),
             "yes" if e.require_ticket else "no", _layers(e)] for e in policy.eligibilities]
    print(_table(["ELIGIBILITY", "GRANTS", "REQUESTORS", "DEFAULT", "MAX", "WARN", "TICKET", "APPROVALS"], rows))
    return 0


# --- access and audit ----------------------------------------------------------------------------------


async def _access_rows(db: Database, *, active: bool) -> list[dict[str, Any]]:
    async with db.sessions() as session:
        stmt = select(AccessRequest).order_by(col(AccessRequest.created_at).desc(), col(AccessRequest.id))
        if active:
            stmt = stmt.where(col(AccessRequest.status) == "active")
        requests = (await session.execute(stmt)).scalars().all()
        grants = {g.request_id: g for g in (await session.execute(
            select(Grant).order_by(Grant.granted_at))).scalars().all()}  # type: ignore[arg-type]
    out = []
    for r in requests:
        g = grants.get(r.id)
        out.append({"id": r.id, "eligibility": r.eligibility, "requester": r.requester, "status": r.status,
                    "layer": f"{r.layer}/{r.layers}" if r.status == "pending" else None,
                    "duration": format_duration(timedelta(seconds=r.duration_s)),
                    "created_at": r.created_at.isoformat(),
                    "expires_at": g.expires_at.isoformat() if g and g.expires_at else None,
                    "ticket": r.ticket})
    return out


def cmd_access_list(args: argparse.Namespace) -> int:
    rows = _run_db(args, lambda db: _access_rows(db, active=args.active))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no active access" if args.active else "no requests")
        return 0
    print(_table(["ID", "ELIGIBILITY", "REQUESTER", "STATUS", "DURATION", "CREATED", "EXPIRES"],
                 [[r["id"], r["eligibility"], r["requester"],
                   r["status"] + (f" (layer {r['layer']})" if r["layer"] else ""), r["duration"],
                   r["created_at"][:16].replace("T", " "),
                   (r["expires_at"] or "-")[:16].replace("T", " ")] for r in rows]))
    return 0


def _anchors(args: argparse.Namespace) -> list[Any]:
    """The anchors given with ``--anchor LINE`` and ``--anchors FILE`` (lines copied from Slack)."""
    from bot.services.auditing.audit_anchor import AnchorError, parse_anchors

    found = []
    try:
        for n, line in enumerate(args.anchor or [], start=1):
            got = parse_anchors(line, source=f"--anchor #{n}")
            if not got:
                raise AnchorError(f"--anchor #{n}: no anchor in {line.strip()[:200]!r}")
            found += got
        for path in args.anchors or []:
            try:
                text = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise AnchorError(f"{path}: cannot read the anchors file: {exc.strerror}") from None
            got = parse_anchors(text, source=path)
            if not got:
                raise AnchorError(f"{path}: no anchor lines in it")
            found += got
    except AnchorError as exc:
        raise CliError(f"jitbot: {exc}", code=2) from None
    return found


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from bot.services.auditing.audit_check import verify_log

    anchors = _anchors(args)
    report = _run_db(args, lambda db: verify_log(db, anchors))
    result = report.chain
    if not result.ok:
        _err(f"audit log BROKEN at event id {result.first_bad_id}: {result.problem} "
             f"({result.checked} earlier events verified)")
        return 1
    if report.problems:
        for problem in report.problems:
            _err(f"audit log INCOMPLETE: {problem}")
        return 1
    print(f"audit log intact: {result.checked} events verified, every request and grant has its events")
    if report.latest is not None:
        print(f"{report.anchors} anchor{'s' if report.anchors != 1 else ''} matched; the latest saw "
              f"{report.latest.count} events at {report.latest.at:%Y-%m-%d %H:%M} UTC (events after it are "
              "covered by the chain only)")
    else:
        print("no anchors given: events cut from the end of the log cannot be detected without them "
              "(--anchor, --anchors; docs/security.md)")
    return 0


def cmd_audit_export(args: argparse.Namespace) -> int:
    from bot.services.auditing.audit import export_events

    text = _run_db(args, lambda db: export_events(db, fmt=args.format, since=args.since))
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8", newline="")
        _err(f"wrote {text.count(chr(10)) - (args.format == 'csv')} events to {args.output}")
    else:
        sys.stdout.write(text)
    return 0


# --- the parser --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jitbot", description="Slack-first just-in-time access bot.",
                                     allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"jitbot {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(parent: Any, name: str, help_text: str, func: Callable[[argparse.Namespace], int] | None = None,
            *, policy: bool = False, database: bool = False) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help_text, description=help_text,
                                                            allow_abbrev=False)
        if policy:
            p.add_argument("--policy", metavar="FILE", help="policy YAML (default: $JITBOT_POLICY or policy.yml)")
        if database:
            p.add_argument("--database", metavar="URL",
                           help="database URL (default: $DATABASE_URL or sqlite+aiosqlite:///jitbot.db)")
        if func is not None:
            p.set_defaults(func=func)
        return p

    pol = add(sub, "policy", "Check and inspect a policy file.")
    pol_sub = pol.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    p = add(pol_sub, "validate", "Validate a policy file; every problem is printed, warnings too.",
            cmd_policy_validate)
    p.add_argument("file", metavar="FILE")
    p.add_argument("--strict", action="store_true", help="exit non-zero on risk warnings too")
    p = add(pol_sub, "show", "Show a policy's eligibilities, approval layers and durations as a table.",
            cmd_policy_show)
    p.add_argument("file", metavar="FILE")
    register_governance(add, sub, pol_sub)

    acc = add(sub, "access", "Inspect access requests and grants.")
    acc_sub = acc.add_subparsers(dest="access_command", required=True, metavar="ACTION")
    p = add(acc_sub, "list", "List requests with their status and expiry.", cmd_access_list, database=True)
    p.add_argument("--active", action="store_true", help="only access that is active now")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = add(acc_sub, "show", "A request's whole story: its grants (attempts, last error) and every audit event.",
            _lazy("bot.access_show", "cmd_access_show"), database=True)
    p.add_argument("request", metavar="REQUEST", help="the request id, e.g. R-7K2QX")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    for action, what in (("revoke", "End someone's active access now (as /jit admin revoke; a JIT administrator)."),
                         ("retry", "Try a failed grant again (as /jit admin retry; a JIT administrator).")):
        p = add(acc_sub, action, what, _lazy("bot.admin_commands", f"cmd_access_{action}"), policy=True,
                database=True)
        p.add_argument("request", metavar="REQUEST", help="the request id, e.g. R-7K2QX")
        p.add_argument("--as", dest="as_admin", metavar="EMAIL", help="you: one of the policy's admins (audited)")
        if action == "revoke":
            p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                           help="wait until the running worker has revoked it (exit 1 if not in time)")

    aud = add(sub, "audit", "Check and export the tamper-evident audit log.")
    aud_sub = aud.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    p = add(aud_sub, "verify", "Verify the audit hash chain (against anchors kept outside the database) and that "
            "every request and grant has its events.", cmd_audit_verify, database=True)
    p.add_argument("--anchor", action="append", metavar="LINE",
                   help="an anchor line as posted to the audit channel "
                        "('jitbot-audit-anchor v1 count=N head=… at=…'); repeatable")
    p.add_argument("--anchors", action="append", metavar="FILE",
                   help="a file of anchor lines (e.g. copied from Slack; other text is ignored); repeatable")
    p = add(aud_sub, "export", "Write the audit log as JSON lines or CSV.", cmd_audit_export, database=True)
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    p.add_argument("--since", metavar="WHEN", type=lambda s: parse_since(s, now=datetime.now(UTC)),
                   help="only events at or after WHEN: a date (2026-01-01), a timestamp, or a duration ago (7d)")
    p.add_argument("--output", metavar="FILE", help="write here instead of standard output")

    ev = add(sub, "events", "The signed event stream to the SIEM sinks (policy event_sinks).")
    ev_sub = ev.add_subparsers(dest="events_command", required=True, metavar="ACTION")
    p = add(ev_sub, "replay", "Send the audit events from EVENT_ID on again, in order, to every sink or one.",
            _lazy("bot.events.commands", "cmd_events_replay"), policy=True, database=True)
    p.add_argument("--since", type=int, required=True, metavar="EVENT_ID", help="the first event to send again")
    p.add_argument("--sink", metavar="NAME", help="only this sink (default: every sink in the policy)")
    p.add_argument("--no-send", action="store_true",
                   help="only move the cursors back and let the running jitbot send")

    con = add(sub, "connectors", "Check identity-provider connectors.")
    con_sub = con.add_subparsers(dest="connectors_command", required=True, metavar="ACTION")
    p = add(con_sub, "check", "Check configuration, credentials and reachability of connectors.",
            _lazy("bot.run_commands", "cmd_connectors_check"), policy=True)
    p.add_argument("name", nargs="?", metavar="NAME", help="only this connector")

    p = add(sub, "worker", "Run the worker alone (expiries, grants, reminders, outbox) until SIGINT/SIGTERM.",
            _lazy("bot.run_commands", "cmd_worker"), policy=True, database=True)
    p.add_argument("--interval", type=float, default=1.0, metavar="SECONDS", help="tick interval (default 1)")
    p.add_argument("--log-messages", action="store_true",
                   help="without SLACK_BOT_TOKEN: log outbox messages instead of sending them (marks them sent)")

    p = add(sub, "serve", "Run the Slack bot (HTTP or Socket Mode) with its worker.",
            _lazy("bot.slack.server", "serve_main"), policy=True)
    p.add_argument("--port", type=int, help="HTTP port (default: $PORT or 3000)")
    p.add_argument("--socket-mode", action="store_true", help="connect with Socket Mode (needs SLACK_APP_TOKEN)")
    p.add_argument("--no-worker", action="store_true", help="do not run the worker in this process")

    p = add(sub, "start", "Start jitbot: `serve` when SLACK_BOT_TOKEN is set, otherwise the playground.",
            _lazy("bot.run_commands", "cmd_start"), policy=True, database=True)
    p.add_argument("--port", type=int, help="HTTP port (serve: $PORT or 3000; playground: 8080)")

    p = add(sub, "playground", "Run the local playground: a fake Slack in the browser with demo personas.",
            _lazy("bot.playground.main", "playground_main"), policy=True, database=True)
    p.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080)")
    p.add_argument("--real-connectors", action="store_true",
                   help="start even when the policy has non-memory connectors (real grants at real identity "
                        "providers)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``jitbot`` with ``argv`` (default: the process arguments); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or bad arguments (2); argparse has printed why
        return int(exc.code or 0)
    try:
        result: int = args.func(args)
        return result
    except CliError as exc:
        _err(str(exc))
        return exc.code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug or an unforeseen failure: one line for the user, the traceback on demand
        try:
            debug = load_settings().JITBOT_LOG_LEVEL == "DEBUG"
        except SettingsError:
            debug = False
        if debug:
            traceback.print_exc()
        _err(f"jitbot: unexpected error: {type(exc).__name__}: {' '.join(str(exc).split())[:300]} "
             "(JITBOT_LOG_LEVEL=DEBUG shows the traceback)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
