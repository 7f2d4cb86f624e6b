"""``jitbot policy plan|apply|check``.

``policy plan FILE`` exits like ``terraform plan -detailed-exitcode``: 0 the database's applied policy
matches the file, 2 there are changes or drift, 1 an error (invalid file, unreachable database).
``policy apply FILE`` exits 0 when applied (or already applied), 1 on error.
``policy check FILE --live`` exits 0 when every group, role and user exists at its IdP (and the bot is a
member of every approver channel), 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
from datetime import UTC, datetime

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.cli_support import CliError, configured_settings, database_url, err, open_db
from bot.governance.applied import apply_versioned, drift_lines, plan_against_db
from bot.governance.channel_check import approver_channels, channel_problems
from bot.governance.live_check import live_problems
from bot.governance.plan import render
from bot.policy_check import check_policy_now
from bot.policy_file import LoadedPolicy, PolicyError
from bot.policy_validate import cmd_policy_validate
from connectors.base import Connector, ConnectorError
from connectors.registry import build_connector
from storage.db import Database


def _load_file(path: str) -> LoadedPolicy:
    try:
        return check_policy_now(path)
    except PolicyError as exc:
        raise CliError("\n".join([*exc.problems, f"{path}: invalid; nothing planned or applied"]), code=1) from None


def actor_name(explicit: str | None) -> str:
    """``--actor``, else ``$USER``, else the login name."""
    if explicit:
        return explicit
    try:
        return os.environ.get("USER") or getpass.getuser()
    except OSError:
        return "unknown"


async def _with_db(url: str, *, create: bool) -> Database:
    try:
        db = open_db(url)
    except CliError:
        if not create:
            raise
        db = Database(url)
    await db.migrate()
    return db


def cmd_policy_plan(args: argparse.Namespace) -> int:
    loaded = _load_file(args.file)

    async def run() -> int:
        db = await _with_db(database_url(args), create=True)
        try:
            plan, applied = await plan_against_db(db, loaded)
        finally:
            await db.dispose()
        drift = drift_lines(applied, loaded)
        for line in drift:
            print(line)
        if drift:
            print()
        print(render(plan))
        return 2 if plan.has_changes or drift else 0

    return asyncio.run(run())


def cmd_policy_apply(args: argparse.Namespace) -> int:
    loaded = _load_file(args.file)
    actor = actor_name(args.actor)

    async def run() -> int:
        db = await _with_db(database_url(args), create=True)
        try:
            plan, version = await apply_versioned(db, loaded, actor=actor, now=datetime.now(UTC))
        finally:
            await db.dispose()
        if plan is None:
            print(f"No changes: policy {loaded.sha256[:12]} is already applied (version {version}).")
            return 0
        print(render(plan))
        print(f"\nApplied policy {loaded.sha256[:12]} from {loaded.path} as {actor}: version {version}. "
              "Every running replica loads it within 5 s and decides nothing under an older one.")
        return 0

    return asyncio.run(run())


async def _slack_problems(loaded: LoadedPolicy) -> list[str]:
    """The approver channels, when the policy names any: the bot must be a member of each."""
    channels = approver_channels(loaded.policy)
    if not channels:
        return []
    settings = configured_settings()
    if settings.SLACK_BOT_TOKEN is None:
        return [f"Slack: SLACK_BOT_TOKEN is not set, so the approver channels ({', '.join(channels)}) "
                "cannot be checked"]
    client = AsyncWebClient(token=settings.SLACK_BOT_TOKEN.get_secret_value(), base_url=settings.SLACK_API_URL)
    try:
        return await channel_problems(loaded.policy, client)
    except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
        return [f"Slack: the approver channels could not be checked ({type(exc).__name__})"]


def cmd_policy_check(args: argparse.Namespace) -> int:
    if not args.live:
        return cmd_policy_validate(argparse.Namespace(file=args.file, strict=False))
    loaded = _load_file(args.file)

    async def run() -> list[str]:
        built: dict[str, Connector] = {}
        try:
            for name, settings in loaded.policy.connectors.items():
                built[name] = build_connector(name, settings)
            return await live_problems(loaded.policy, built) + await _slack_problems(loaded)
        except ConnectorError as exc:
            return [f"identity provider: {exc.user_message} ({exc})"]
        finally:
            for connector in built.values():
                await connector.aclose()

    problems = asyncio.run(run())
    for problem in problems:
        err(f"✗ {problem}")
    if problems:
        err(f"{args.file}: {len(problems)} problem(s) at the identity provider(s)")
        return 1
    print(f"{args.file}: every group, role and user exists; approver groups have enough members"
          + ("; the bot is a member of every approver channel" if approver_channels(loaded.policy) else ""))
    return 0
