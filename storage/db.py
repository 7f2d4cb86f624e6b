"""Engine, sessions and transactions for SQLite (embedded default) and PostgreSQL (replicas)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, make_url, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from storage.core_tx import CoreTx, SessionCore, SqliteCore, checkout, locked_retry
from storage.inline_sqlite import InlineDBAPI

# SQLite statements run on the event-loop thread (storage/inline_sqlite.py); JITBOT_SQLITE_THREADS=1 goes
# back to aiosqlite's thread per connection (kept to compare the two: bench/README.md).
INLINE_SQLITE = os.environ.get("JITBOT_SQLITE_THREADS", "") != "1"
DEFAULT_URL = "sqlite+aiosqlite:///jitbot.db"

# A PostgreSQL transaction-level advisory lock on key :k, held until the transaction ends.
ADVISORY_XACT_LOCK = text("SELECT pg_advisory_xact_lock(:k)")
# Key for pg_advisory_xact_lock: serialises appends to the audit hash chain across replicas (taken at
# commit by the chain's trigger, migration 0007, which names it as a number: 111246087).
AUDIT_CHAIN_LOCK = 0x6A17B07
# Key for pg_advisory_xact_lock: replicas starting together migrate one after the other.
MIGRATION_LOCK = 0x6A17B08


# A pooled PostgreSQL connection is checked before use only after it sat idle this long. SQLAlchemy's
# pool_pre_ping checks it on every checkout — BEGIN, ";", ROLLBACK: three round trips per transaction,
# a tenth of a replica's CPU. A connection used a moment ago is almost surely alive; if the server went
# away meanwhile, the statement fails as a disconnect, SQLAlchemy invalidates the whole pool, and the
# caller's usual retry takes over (the next tick; the outbox's lease; an error reply in Slack).
PING_IDLE_S = 5.0


def _ping_when_idle(engine: AsyncEngine, idle_s: float) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine.pool, "checkin")
    def _checkin(_dbapi_conn: Any, record: Any) -> None:
        if record is not None:
            record.info["idle_since"] = time.monotonic()

    @event.listens_for(sync_engine.pool, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < idle_s:  # new, or used a moment ago
            return
        try:
            alive = sync_engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # the pool drops it and checks out another (documented recipe)
            raise DisconnectionError(f"connection idle {time.monotonic() - since:.0f}s was gone") from exc
        if not alive:
            raise DisconnectionError("connection failed its check")


# Every PostgreSQL connection's bounds (``server_settings``, set when it connects), so that one replica
# paused or cut off mid-transaction (a VM pause, a partition) cannot hold the others up for long:
# - a wait for a row or advisory lock ends after ``lock_timeout`` (the statement fails; the caller's usual
#   retry takes over: the next tick, the outbox's lease, an error reply in Slack);
# - no statement runs past ``statement_timeout`` (migrations lift it for their own transaction);
# - a transaction left open and idle (its process paused between two statements) is ended by the server
#   after ``idle_in_transaction_session_timeout``, releasing its locks — well inside a claim's lease;
# - the server probes an idle client's socket (TCP keepalive: first after 30 s idle, then every 10 s, 3
#   misses) and drops a vanished one in about a minute instead of the kernel's two hours.
# The client side is bounded by asyncpg's ``command_timeout``: a server that stops answering fails the
# statement on this side too.
PG_SESSION_SETTINGS = {
    "lock_timeout": "10s",
    "statement_timeout": "60s",
    "idle_in_transaction_session_timeout": "30s",
    "tcp_keepalives_idle": "30",
    "tcp_keepalives_interval": "10",
    "tcp_keepalives_count": "3",
}
PG_COMMAND_TIMEOUT_S = 75.0

AFTER_COMMIT = "after_commit"


def after_commit(info: dict[str, Any], callback: Callable[[], None]) -> None:
    """Run ``callback`` once the transaction whose ``info`` this is has committed (never if it rolls back)."""
    info.setdefault(AFTER_COMMIT, []).append(callback)


class Database:
    """One engine plus a session factory. ``transaction()`` is the unit of work of every service."""

    def __init__(self, url: str = DEFAULT_URL, *, echo: bool = False, pool_size: int = 30,
                 schema: str | None = None, ping_idle_s: float = PING_IDLE_S) -> None:
        self.url = url
        kwargs: dict[str, Any] = {"echo": echo}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30}
        else:
            # A fixed pool, opened as needed and kept: an overflow connection is closed when it comes back
            # while pool_size are idle, so under load a pool with overflow opens and closes connections
            # all the time (each a new PostgreSQL backend, plus asyncpg's type introspection — with
            # 10 + 10 a replica opened one every other flow). At the limit a transaction waits for a
            # connection, as it did at the overflow's limit.
            kwargs.update(pool_size=pool_size, max_overflow=0)
            server_settings = dict(PG_SESSION_SETTINGS)
            if schema:  # an isolated schema (tests; several deployments in one database)
                server_settings["search_path"] = schema
            kwargs["connect_args"] = {"server_settings": server_settings, "command_timeout": PG_COMMAND_TIMEOUT_S}
        file_db = url.startswith("sqlite") and make_url(url).database not in (None, "", ":memory:")
        inline = file_db and INLINE_SQLITE
        if file_db:
            # The connection used last goes out first. SQLite drops a connection's page cache whenever
            # another connection has written since it last read: with the pool handing out its
            # connections in turn, every transaction re-read each page it touched from the file (236
            # read system calls per flow in bench/throughput.py; 45 with the last-used connection).
            kwargs["pool_use_lifo"] = True
            # Connections are kept, not closed on return: up to 13 read sessions overlapped under load,
            # and past SQLAlchemy's default 5 each extra one was opened (PRAGMAs, the schema parsed again,
            # a cold cache) and closed again when returned — 154 connections per 600 flows.
            kwargs.update(pool_size=20, max_overflow=10)
        # Core-only transactions and reads skip the session (storage/core_tx.py)
        self._inline: InlineDBAPI | None = InlineDBAPI() if inline else None
        if inline:  # statements run on the event-loop thread (storage/inline_sqlite.py)
            kwargs["module"] = self._inline
            kwargs.pop("connect_args", None)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        self.read_engine = self.engine
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        if not self.is_sqlite:
            _ping_when_idle(self.engine, ping_idle_s)
            # Reads (``sessions()``) run without BEGIN / ROLLBACK round trips: under READ COMMITTED every
            # statement reads with a snapshot of its own inside a transaction too, so a read-only session
            # loses nothing by running each statement on its own (same pool; writes use transaction()).
            self.read_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        # Set after every commit that added outbox messages while no dispatcher ran in this process (or
        # that one had no room): the dispatcher's claim pass takes them.
        self.outbox_ready = asyncio.Event()
        # The running outbox dispatcher of this process (bot/services/outbox/dispatcher.py), if any: commits claim
        # their new messages for it and hand them over.
        self.outbox_taker: Any = None
        # SQLite has one writer: writers of this process queue here (first come, first served) instead
        # of polling the file lock in SQLite's busy handler, which sleeps up to 100 ms between tries.
        self._write_turn = asyncio.Lock() if self.is_sqlite else None
        if self.is_sqlite:
            self._sqlite_connections(self.engine, writes=True, inline=inline)
            if file_db:
                # Reads get their own pool: under WAL they never wait for a writer. They send no BEGIN /
                # ROLLBACK (each statement reads a snapshot of its own, as on PostgreSQL's autocommit
                # reads above): a read session is most often one or two statements.
                self.read_engine = create_async_engine(url, **kwargs)
                self._sqlite_connections(self.read_engine, writes=False, inline=inline)
        self.sessions = async_sessionmaker(self.read_engine, expire_on_commit=False)
        self._writers = async_sessionmaker(self.engine, expire_on_commit=False)

    @staticmethod
    def _sqlite_connections(engine: AsyncEngine, *, writes: bool, inline: bool = False) -> None:
        # pysqlite's own transaction handling is off; every write transaction is BEGIN IMMEDIATE, so a
        # writer holds the database lock from its first statement (no lost updates, no fork in the
        # audit chain), and WAL lets readers carry on meanwhile. ``writes=False``: no BEGIN at all
        # (the read pool: each statement is a transaction of its own).
        sync_engine = engine.sync_engine

        @event.listens_for(sync_engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            # an inline connection must not block the event loop: it retries asynchronously instead
            cur.execute("PRAGMA busy_timeout=0" if inline else "PRAGMA busy_timeout=30000")
            cur.close()

        if not writes:
            return

        def do_begin(dbapi_conn: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            cursor.close()

        # The dialect's hook for starting a transaction (pysqlite's does nothing), on this engine's own
        # dialect instance. A "begin" event listener did the same but gave the engine connection events,
        # which SQLAlchemy then dispatches around every statement (and its BEGIN went through the whole
        # Connection.execute path): a one-statement write transaction cost 214 µs of CPU, now 190.
        sync_engine.dialect.do_begin = do_begin  # type: ignore[method-assign,assignment]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in one transaction: committed on success, rolled back on any exception.

        Never open one inside another in the same task: on SQLite the inner one would wait for the outer.
        """
        taker = self.outbox_taker
        if self._write_turn is None:
            async with self._writers() as session, session.begin():
                session.info["outbox_taker"] = taker
                yield session
        else:
            async with self._write_turn, self._writers() as session, session.begin():
                session.info["outbox_taker"] = taker
                yield session
        self._committed(session.info)

    def _committed(self, info: dict[str, Any]) -> None:
        """After a commit: its outbox messages to the dispatcher (bot/services/outbox/write.py), then what
        the transaction asked to run once committed (``after_commit``)."""
        taker = info.get("outbox_taker")
        if taker is not None and (claimed := info.get("outbox_claimed")):
            taker.accept(claimed)  # messages this commit claimed for the running dispatcher
        if taker is not None and (unclaimed := info.get("outbox_unclaimed")):
            taker.notice(unclaimed)  # keys whose new messages wait behind older ones
        if taker is not None and (held := info.get("outbox_held")):
            taker.look_again(held)  # keys left to another process's chain: in case its last record missed them
        if info.get("outbox"):
            self.outbox_ready.set()
        for callback in info.pop(AFTER_COMMIT, ()):
            callback()

    @asynccontextmanager
    async def core_transaction(self) -> AsyncIterator[CoreTx]:
        """A write transaction of Core statements (storage/core_tx.py), on SQLite without a session; its
        audit events and outbox messages are written at commit as a session's are. Committed on
        success, rolled back on any exception."""
        if self._inline is None:
            async with self.transaction() as session:
                yield SessionCore(session)
            return
        assert self._write_turn is not None
        async with self._write_turn:
            fairy = await checkout(self.engine)
            connection = fairy.driver_connection
            tx = SqliteCore(connection, self.engine.dialect, {"outbox_taker": self.outbox_taker})
            try:
                await locked_retry("BEGIN IMMEDIATE", connection, self._inline.busy_seconds)
                try:
                    yield tx
                    tx.before_commit()
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
                await locked_retry("COMMIT", connection, self._inline.busy_seconds)
            finally:
                if connection.in_transaction:  # a COMMIT that gave up (the lock never came)
                    connection.execute("ROLLBACK")
                fairy.close()
        self._committed(tx.info)

    @asynccontextmanager
    async def core_reads(self) -> AsyncIterator[CoreTx]:
        """Reads of Core statements, each a snapshot of its own (as ``sessions()``), on SQLite without
        a session."""
        if self._inline is None:
            async with self.sessions() as session:
                yield SessionCore(session)
            return
        fairy = await checkout(self.read_engine)
        try:
            yield SqliteCore(fairy.driver_connection, self.read_engine.dialect)
        finally:
            fairy.close()

    async def lock_audit_chain(self, session: AsyncSession) -> None:
        """Serialise audit-chain appends (PostgreSQL advisory lock; SQLite already has one writer)."""
        if not self.is_sqlite:
            await session.execute(ADVISORY_XACT_LOCK, {"k": AUDIT_CHAIN_LOCK})

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    async def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (run on every start)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))

        def upgrade(conn: Connection) -> None:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

        async with self.engine.begin() as conn:
            if not self.is_sqlite:  # the second replica waits, then finds the schema at head
                # a migration may rewrite a large table, and a replica may wait for another's migration
                await conn.execute(text("SET LOCAL statement_timeout = 0"))
                await conn.execute(text("SET LOCAL lock_timeout = 0"))
                await conn.execute(ADVISORY_XACT_LOCK, {"k": MIGRATION_LOCK})
            await conn.run_sync(upgrade)

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.is_sqlite and self.read_engine is not self.engine:  # PostgreSQL's shares the pool
            await self.read_engine.dispose()
