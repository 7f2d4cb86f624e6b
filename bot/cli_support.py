"""What every ``jitbot`` subcommand shares: the one-line error and its exit status, the settings, the
policy file and the database a command was pointed at, and plain-text output.

The command modules (bot/cli.py, bot/run_commands.py, bot/admin_commands.py, bot/governance,
bot/reports) import from here, never from each other's private helpers.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from bot.domain.durations import parse_duration
from bot.policy_check import check_policy_now
from bot.policy_file import LoadedPolicy, PolicyError, load_policy
from bot.settings import Settings, SettingsError, load_settings
from storage.db import Database


class CliError(Exception):
    """A problem to print as one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def configured_settings() -> Settings:
    """The process's settings; unusable settings are a ``CliError`` with exit status 2."""
    try:
        return load_settings()
    except SettingsError as exc:
        raise CliError(str(exc), code=2) from None


def database_url(args: argparse.Namespace) -> str:
    """``--database``, else ``DATABASE_URL``."""
    return str(args.database or configured_settings().DATABASE_URL)


def policy_path(args: argparse.Namespace) -> str:
    """``--policy``, else ``JITBOT_POLICY``."""
    return str(args.policy or configured_settings().JITBOT_POLICY)


def err(text: str) -> None:
    """One line on standard error."""
    print(text, file=sys.stderr)


def open_db(url: str) -> Database:
    """The configured database; refuses to create an empty SQLite file as a side effect of a read."""
    prefix = "sqlite+aiosqlite:///"
    if url.startswith(prefix) and ":memory:" not in url and not Path(url[len(prefix):]).exists():
        raise CliError(f"jitbot: no database at {url[len(prefix):]} (set DATABASE_URL or --database)")
    return Database(url)


def run_db(args: argparse.Namespace, work: Callable[[Database], Any]) -> Any:
    """Runs ``work`` against the command's database and closes it; a database error is one line."""
    async def run() -> Any:
        db = open_db(database_url(args))
        try:
            return await work(db)
        except SQLAlchemyError as exc:
            raise CliError(f"jitbot: database error at {db.url.split('@')[-1]}: "
                           f"{' '.join(str(getattr(exc, 'orig', None) or exc).split())[:300]}") from None
        finally:
            await db.dispose()

    return asyncio.run(run())


def configured_policy(args: argparse.Namespace, *, connectors: bool = True) -> LoadedPolicy:
    """The policy file, checked whole (bot/policy_check.py) before the command opens anything: its problems
    are the lines ``policy validate`` prints, and the exit status 2. ``connectors=False``: the schema and
    cross-references only (``connectors check`` reports each connector itself)."""
    try:
        return check_policy_now(policy_path(args)) if connectors else load_policy(policy_path(args))
    except PolicyError as exc:
        raise CliError("\n".join(exc.problems), code=2) from None


def lazy_command(module: str, function: str) -> Callable[[argparse.Namespace], int]:
    """A command imported only when it runs, so that ``jitbot`` starts without loading every command."""
    def run(args: argparse.Namespace) -> int:
        entry = getattr(importlib.import_module(module), function)
        return int(entry(args))

    return run


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


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]
    return "\n".join(lines)
