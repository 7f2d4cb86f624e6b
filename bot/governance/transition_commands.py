"""``jitbot transition status|revert``."""

from __future__ import annotations

import argparse
import asyncio

from bot.bootstrap import build_runtime, close_runtime
from bot.cli_support import CliError, configured_policy, database_url, table
from bot.governance.commands import actor_name
from bot.services.transition import TransitionService


def cmd_transition_status(args: argparse.Namespace) -> int:
    loaded = configured_policy(args)

    async def run() -> int:
        rt = await build_runtime(loaded, database_url(args))
        try:
            service = TransitionService(rt)
            rows = []
            for e in loaded.policy.eligibilities:
                if args.all or e.transition is not None:
                    until = f"{e.transition.static_access_until}" if e.transition else "-"
                    for s in await service.standing_members(e):
                        rows.append([e.name, f"{e.target.kind}:{e.target.ref}", s.user.email, until,
                                     f"{s.last_jit_use:%Y-%m-%d %H:%M}" if s.last_jit_use else "never",
                                     "keep_standing" if s.kept else "" if s.user.direct else "nested group"])
        finally:
            await close_runtime(rt)
        if not rows:
            print("no standing members")
            return 0
        print(table(["ELIGIBILITY", "TARGET", "STANDING MEMBER", "STATIC UNTIL", "LAST JIT USE", "NOTE"], rows))
        return 0

    return asyncio.run(run())


def cmd_transition_revert(args: argparse.Namespace) -> int:
    loaded = configured_policy(args)
    actor = actor_name(args.actor)

    async def run() -> int:
        rt = await build_runtime(loaded, database_url(args))
        try:
            rows = await TransitionService(rt).revert(args.eligibility, actor=actor, apply=args.apply)
        finally:
            await close_runtime(rt)
        if not rows:
            raise CliError(f"jitbot: nothing to revert for {args.eligibility!r}")
        verb = "restored" if args.apply else "would restore"
        for r in rows:
            print(f"{verb} {r.user_email} to {r.target_kind}:{r.target_id} at {r.connector} "
                  f"(removed {r.removed_at:%Y-%m-%d %H:%M} UTC)")
        if not args.apply:
            print(f"nothing changed; run again with --apply to restore {len(rows)} member(s)")
        return 0

    return asyncio.run(run())
