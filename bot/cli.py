"""The ``jitbot`` command line.

Exit codes: 0 success; 1 the command ran and found a problem (invalid policy, broken audit chain,
failed connector check, unreachable database); 2 bad arguments or unusable configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col

from bot import __version__
from bot.domain.durations import format_duration, parse_duration
from bot.domain.policy import Eligibility, Principals
from bot.policy_file import LoadedPolicy, PolicyError, load_policy, memory_directory, risk_warnings
from bot.settings import Settings, SettingsError, load_settings
from connectors.base import ConnectorError
from connectors.registry import build_connector
from storage.db import Database
from storage.tables import AccessRequest, Grant

log = logging.getLogger("jitbot")


class CliError(Exception):
    """A problem to print as one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise CliError(str(exc), code=2) from None


def _database_url(args: argparse.Namespace) -> str:
    return str(args.database or _settings().DATABASE_URL)


def _policy_path(args: argparse.Namespace) -> str:
    return str(args.policy or _settings().JITBOT_POLICY)


def _err(text: str) -> None:
    print(text, file=sys.stderr)


def _open_db(url: str) -> Database:
    """The configured database; refuses to create an empty SQLite file as a side effect of a read."""
    prefix = "sqlite+aiosqlite:///"
    if url.startswith(prefix) and ":memory:" not in url and not Path(url[len(prefix):]).exists():
        raise CliError(f"jitbot: no database at {url[len(prefix):]} (set DATABASE_URL or --database)")
    return Database(url)


# --- policy ------------------------------------------------------------------------------------------


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


def _connector_problems(loaded: LoadedPolicy) -> list[str]:
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
        problems = _connector_problems(loaded)
    except PolicyError as exc:
        problems = exc.problems
    if problems:
        for problem in problems:
            _err(problem)
        _err(f"{args.file}: invalid ({len(problems)} problem{'s' if len(problems) != 1 else ''})")
        return 1
    policy = loaded.policy
    warnings = risk_warnings(policy, memory_directory(policy))
    for warning in warnings:
        _err(f"warning: {args.file}: {warning}")
    print(f"{args.file}: valid ({len(policy.eligibilities)} eligibilities, {len(policy.connectors)} connectors, "
          f"{len(warnings)} warning{'s' if len(warnings) != 1 else ''})")
    return 1 if args.strict and warnings else 0


def _who(p: Principals) -> str:
    return ", ".join([*(f"@{g}" for g in p.groups), *p.users]) or "-"


def _layers(e: Eligibility) -> str:
    if not e.approvals:
        return "auto-approved"
    return " → ".join(f"{i}: {_who(layer.approvers)} ×{layer.min_approvals} ({format_duration(layer.timeout)})"
                      for i, layer in enumerate(e.approvals, start=1))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]
    return "\n".join(lines)


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


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from bot.services.audit import verify_chain

    result = _run_db(args, verify_chain)
    if result.ok:
        print(f"audit log intact: {result.checked} events verified")
        return 0
    _err(f"audit log BROKEN at event id {result.first_bad_id}: {result.problem} "
         f"({result.checked} earlier events verified)")
    return 1


def parse_since(text: str, *, now: datetime) -> datetime:
    """``2026-01-01`` / an ISO timestamp (UTC unless it says otherwise) / a duration back from ``now``."""
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a date (2026-01-01) nor a duration (7d)") from None
    if len(text) == 10:  # a bare date means its midnight
        value = datetime.combine(date.fromisoformat(text), datetime.min.time())
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def cmd_audit_export(args: argparse.Namespace) -> int:
    from bot.services.audit import export_events

    text = _run_db(args, lambda db: export_events(db, fmt=args.format, since=args.since))
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8", newline="")
        _err(f"wrote {text.count(chr(10)) - (args.format == 'csv')} events to {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def _run_db(args: argparse.Namespace, work: Callable[[Database], Any]) -> Any:
    async def run() -> Any:
        db = _open_db(_database_url(args))
        try:
            return await work(db)
        except SQLAlchemyError as exc:
            raise CliError(f"jitbot: database error at {db.url.split('@')[-1]}: "
                           f"{' '.join(str(getattr(exc, 'orig', None) or exc).split())[:300]}") from None
        finally:
            await db.dispose()

    return asyncio.run(run())


# --- shared by the command modules (bot/run_commands.py, bot/governance, bot/reports) ----------------------


def _load(args: argparse.Namespace) -> LoadedPolicy:
    try:
        return load_policy(_policy_path(args))
    except PolicyError as exc:
        raise CliError("\n".join(exc.problems), code=2) from None


def _lazy(module: str, function: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        entry = getattr(importlib.import_module(module), function)
        return int(entry(args))

    return run


# --- the parser --------------------------------------------------------------------------------------------


def _lazy_register(add: Callable[..., argparse.ArgumentParser], sub: Any, pol_sub: Any) -> None:
    importlib.import_module("bot.governance.parser").register(add, sub, pol_sub)


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
    _lazy_register(add, sub, pol_sub)

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
    add(aud_sub, "verify", "Verify the audit hash chain; report the first broken row.", cmd_audit_verify,
        database=True)
    p = add(aud_sub, "export", "Write the audit log as JSON lines or CSV.", cmd_audit_export, database=True)
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    p.add_argument("--since", metavar="WHEN", type=lambda s: parse_since(s, now=datetime.now(UTC)),
                   help="only events at or after WHEN: a date (2026-01-01), a timestamp, or a duration ago (7d)")
    p.add_argument("--output", metavar="FILE", help="write here instead of standard output")

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
