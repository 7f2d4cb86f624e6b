"""What ``bench.throughput`` reads besides the clock: processes' CPU time (Linux /proc), the bot's
database (undelivered messages, PostgreSQL's statistics) and the counts the replicas log as they stop.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import asyncpg


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """User + system CPU of every PostgreSQL server process now alive (its backends included; Linux /proc)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() != "postgres":
                        continue
                total += cpu_seconds(int(entry))
            except OSError:  # the process ended meanwhile
                continue
    return total


async def pending_messages(url: str) -> int:
    """Outbox messages not yet delivered (or given up), read from the bot's database."""
    return await scalar(url, "SELECT count(*) FROM outbox WHERE status = 'pending'")


async def pg_stats(url: str) -> dict[str, int]:
    """The bot database's transaction and row counters (PostgreSQL's statistics views; empty on SQLite)."""
    if url.startswith("sqlite"):
        return {}
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql").split("?")[0])
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        row = await conn.fetchrow(
            "SELECT xact_commit AS commits, xact_rollback AS rollbacks, tup_returned AS rows_scanned,"
            " tup_fetched AS rows_fetched, tup_inserted + tup_updated + tup_deleted AS rows_written"
            " FROM pg_stat_database WHERE datname = current_database()")
        indexes = await conn.fetch("SELECT indexrelname, idx_tup_read FROM pg_stat_user_indexes")
        return {**(dict(row) if row else {}), **{f"idx:{t['indexrelname']}": t["idx_tup_read"] for t in indexes}}
    finally:
        await conn.close()


async def scalar(url: str, query: str) -> int:
    """One integer read from the bot's database."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1]

        def count() -> int:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
                return int(conn.execute(query).fetchone()[0] or 0)

        return await asyncio.to_thread(count)
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql").split("?")[0])
    try:
        return int(await conn.fetchval(query) or 0)
    finally:
        await conn.close()


def replica_counts(logs: list[Path]) -> tuple[list[int], dict[str, int]]:
    """From the stopped replicas' logs: their worker passes over their lives (all, full; from their last
    log line) and their outbox counts, from "outbox dispatcher stopped: …"."""
    passes = [0, 0]
    dispatch: dict[str, int] = {}
    for log in logs:
        for line in log.read_text().splitlines():
            if "worker stopped:" in line:  # "worker stopped: N passes, M full"
                words = line.split("stopped:", 1)[1].replace(",", " ").split()
                passes[0] += int(words[0])
                passes[1] += int(words[2])
            if "outbox dispatcher stopped:" in line:
                for part in line.split("stopped:", 1)[1].split(","):
                    n, _, name = part.strip().partition(" ")
                    dispatch[name] = dispatch.get(name, 0) + int(n)
    return passes, dispatch
