"""The PostgreSQL server the tests use.

``JITBOT_TEST_PG`` set (``postgresql://user@host:port/database``): that server and database, as it is.
Unset: a throwaway server of our own, started on first use (about a second) from the binaries in the
``pgserver`` wheel — PostgreSQL 16, trust authentication, user ``postgres``, a ``test`` database, on a
free TCP port of 127.0.0.1 — and stopped by ``stop()`` at the end of the session (``tests/conftest.py``),
its data directory removed. A session that runs no PostgreSQL test starts nothing.

Everything that reaches PostgreSQL from the tests (the fixtures, the ``jitbot serve`` processes, the
short benchmark runs) takes its address from here, so they all talk to the same server.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

START_TIMEOUT_S = 60  # pg_ctl's own wait; the machine may be busy


@dataclass
class _Throwaway:
    data: Path
    bin: Path
    user: str | None  # the system user the server runs as (PostgreSQL refuses to run as root)
    dsn: str

    def stop(self) -> None:
        if (self.data / "pgdata" / "postmaster.pid").exists():
            _run(self, ["pg_ctl", "-D", str(self.data / "pgdata"), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(self.data, ignore_errors=True)


_server: _Throwaway | None = None
_dsn: str | None = None


def dsn() -> str:
    """The test database's URI (``postgresql://...``, as asyncpg takes it); starts the server if it is ours."""
    global _dsn, _server
    if _dsn is None:
        given = os.environ.get("JITBOT_TEST_PG")
        if given:
            _dsn = given
        else:
            _server = _start()
            atexit.register(stop)  # in case the session ends without pytest_unconfigure
            _dsn = _server.dsn
    return _dsn


def url() -> str:
    """The same database as a SQLAlchemy URL (``postgresql+asyncpg://...``), for ``Database()``."""
    return dsn().replace("postgresql://", "postgresql+asyncpg://", 1)


def database_dsn(name: str) -> str:
    """Another database on the same server (``postgresql://...``)."""
    parts = urlsplit(dsn())
    return urlunsplit(parts._replace(path="/" + name))


def url_at(host: str, port: int) -> str:
    """The test database reached through another address (a proxy in front of the server), as a SQLAlchemy URL."""
    parts = urlsplit(url())
    credentials = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=(credentials + "@" if credentials else "") + f"{host}:{port}"))


def address() -> tuple[str, int]:
    """The server's host and TCP port."""
    parts = urlsplit(dsn())
    return parts.hostname or "127.0.0.1", parts.port or 5432


def started() -> bool:
    """Whether this session started a throwaway server that is still running."""
    return _server is not None


def stop() -> None:
    """Stops and removes the throwaway server, if this session started one; a given server is left alone."""
    global _server, _dsn
    if _server is not None:
        server, _server, _dsn = _server, None, None
        server.stop()


def _run(server: _Throwaway, argv: list[str]) -> None:
    """One of the server's programs, as the server's user; its output is shown if it fails."""
    done = subprocess.run([str(server.bin / argv[0]), *argv[1:]], user=server.user, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=START_TIMEOUT_S + 30, check=False)
    if done.returncode != 0:
        log = server.data / "server.log"
        raise RuntimeError(f"{' '.join(argv[:3])} failed ({done.returncode}):\n{done.stdout}"
                           + (f"\nserver log:\n{log.read_text(errors='replace')}" if log.exists() else ""))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binaries() -> Path:
    """The server programs shipped in the ``pgserver`` wheel (found without importing it: its import has
    side effects — a runtime directory, a lock file — that we do not need)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the pgserver package is missing: run `make .venv/.synced`, or set JITBOT_TEST_PG")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _unprivileged_user() -> str:
    """PostgreSQL refuses to run as root: the user it runs as then (the one the pgserver wheel would use)."""
    name = "pgserver"
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "-s", "/usr/sbin/nologin", name], check=True,
                       capture_output=True)
    return name


def _reachable_by_others(directory: Path) -> bool:
    """Whether another user can reach ``directory`` (every directory on its path searchable by others)."""
    return all(p.stat().st_mode & 0o001 for p in [directory, *directory.parents])


def _start() -> _Throwaway:
    user = None
    parent = Path(tempfile.gettempdir())
    if os.geteuid() == 0:
        user = _unprivileged_user()
        if not _reachable_by_others(parent):  # e.g. TMPDIR inside a root-only directory
            parent = Path("/tmp")
    data = Path(tempfile.mkdtemp(prefix="jitbot-pg-", dir=parent))  # short: a socket path fits in 107 bytes
    if user is not None:
        shutil.chown(data, user)
    server = _Throwaway(data=data, bin=_binaries(), user=user, dsn="")
    try:
        _run(server, ["initdb", "-D", str(data / "pgdata"), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
                      "--no-sync"])
        for attempt in range(3):  # the free port may be taken between finding it and the server binding it
            port = _free_port()
            options = f"-h 127.0.0.1 -p {port} -k {data} -c fsync=off -c full_page_writes=off"
            try:
                _run(server, ["pg_ctl", "-D", str(data / "pgdata"), "-l", str(data / "server.log"),
                              "-o", options, "-w", "-t", str(START_TIMEOUT_S), "start"])
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        _run(server, ["createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "test"])
    except BaseException:
        server.stop()
        raise
    server.dsn = f"postgresql://postgres@127.0.0.1:{port}/test"
    return server
