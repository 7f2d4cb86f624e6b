"""``jitbot events replay --since EVENT_ID [--sink NAME]``: send the audit events from EVENT_ID on again."""

from __future__ import annotations

import argparse
import socket

import aiohttp

from bot.cli_support import CliError, configured_policy, run_db
from bot.events import cursor
from bot.events.stream import EventStream
from bot.services.clock import SystemClock
from storage.db import Database


def cmd_events_replay(args: argparse.Namespace) -> int:
    policy = configured_policy(args).policy
    sinks = policy.event_sinks
    if args.since < 1:
        raise CliError("jitbot: --since must be an event id (1 or more); see `jitbot audit export`", code=2)
    if args.sink is not None:
        sinks = tuple(s for s in sinks if s.name == args.sink)
        if not sinks:
            known = ", ".join(s.name for s in policy.event_sinks) or "none"
            raise CliError(f"jitbot: no event sink {args.sink!r} in the policy (sinks: {known})", code=2)
    if not sinks:
        raise CliError("jitbot: the policy has no event_sinks", code=2)

    async def work(db: Database) -> int:
        head = await cursor.head_id(db)
        if args.since > head:
            raise CliError(f"jitbot: there is no event {args.since} yet (the newest is {head})", code=2)
        for sink in sinks:
            await cursor.start(db, sink.name)
            moved = await cursor.rewind(db, sink.name, since=args.since)
            assert moved is not None
            print(f"{sink.name}: {head - moved.last_id} event(s) to send, from event {moved.last_id + 1}")
        if args.no_send:
            return 0
        async with aiohttp.ClientSession() as http:
            stream = EventStream(db, lambda: sinks, SystemClock(), http=http,
                                 owner=f"replay@{socket.gethostname()}")
            try:
                sent = await stream.pass_once()
            finally:
                await stream.close()
        left = {s.name: head - ((await cursor.read(db, s.name)) or cursor.Cursor(head, None, None)).last_id
                for s in sinks}
        print(f"sent {sent} event(s)" + "".join(f"; {n}: {k} left to the running jitbot or a later replay"
                                                 for n, k in left.items() if k > 0))
        return 0

    return int(run_db(args, work))
