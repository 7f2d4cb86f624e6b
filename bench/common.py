"""Shared bits of the benchmarks: percentiles, machine description, a throttled in-process IdP."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from datetime import datetime

from connectors.base import Check, GrantResult, IdpUser, RateLimited, Target

# ``--database postgres`` runs make a database of their own on this server: the one JITBOT_TEST_PG names
# (as for the tests), else the local one on 127.0.0.1:5432. Their figures are that server's.
PG_SERVER = os.environ.get("JITBOT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def pg_dsn(database: str) -> str:
    """A database on the benchmarks' PostgreSQL server, as asyncpg takes it (``postgresql://``)."""
    return PG_SERVER.rsplit("/", 1)[0] + "/" + database


def pg_url(database: str) -> str:
    """The same database as a SQLAlchemy URL (``postgresql+asyncpg://``)."""
    return pg_dsn(database).replace("postgresql://", "postgresql+asyncpg://", 1)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def cpu_times() -> tuple[float, float, float]:
    """The whole machine's (busy, steal, total) jiffies so far, from /proc/stat (Linux)."""
    with open("/proc/stat") as f:
        fields = [float(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    steal = fields[7] if len(fields) > 7 else 0.0
    total = sum(fields[:8])
    return total - idle - steal, steal, total


def machine_use(before: tuple[float, float, float], after: tuple[float, float, float]) -> str:
    """How busy the machine was between two ``cpu_times()`` readings: busy and steal as % of all cores.
    Steal is time the hypervisor gave to other guests: on a shared host the cores are not all ours."""
    busy, steal, total = (a - b for a, b in zip(after, before, strict=True))
    if total <= 0:
        return "machine CPU n/a"
    return f"machine CPU busy {100 * busy / total:.0f}%, steal {100 * steal / total:.0f}%"


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class RecordingIdp:
    """An in-process IdP: records when each revoke arrives; optionally enforces R requests/s with 429s
    (a fixed 1-second window, like Okta's per-minute one: ``retry_after`` is the rest of the window).
    It keeps group memberships (``members``; seed them to match the grants), so that the reconciliation
    sweep sees what a real provider would show instead of one vanished membership per grant."""

    def __init__(self, name: str = "idp", rate: float | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.rate = rate
        self._now = monotonic
        self.members: dict[str, set[str]] = {}  # group → emails
        self.revoked_at: dict[str, float] = {}
        self.revoked_twice = 0
        self.calls = 0
        self.throttled = 0
        # The limiter's windows: when each opened and how many calls it admitted (see ``windowed_rate``).
        self.windows: list[tuple[float, int]] = []
        self._window_start = float("-inf")
        self._window_count = 0

    def _admit(self) -> None:
        self.calls += 1
        if self.rate is None:
            return
        now = self._now()
        if now - self._window_start >= 1.0:
            self._window_start, self._window_count = now, 0
            self.windows.append((now, 0))
        if self._window_count >= self.rate:
            self.throttled += 1
            raise RateLimited("429 Too Many Requests", retry_after=1.0 - (now - self._window_start))
        self._window_count += 1
        self.windows[-1] = (self._window_start, self._window_count)

    def windowed_rate(self) -> float:
        """Calls admitted per second over the limiter's complete windows: those admitted in every window but
        the last, over the time from the first window's opening to the last one's. Each window admits at
        most ``rate`` calls and lasts at least a second, so this can never exceed ``rate``, however the
        calls are timed within windows; a window opens late when the client left the IdP idle."""
        if len(self.windows) < 2:
            return float("nan")
        return sum(n for _, n in self.windows[:-1]) / (self.windows[-1][0] - self.windows[0][0])

    def use_up_window(self) -> None:
        """Start a window whose whole budget is spent (as if other clients had just used it)."""
        self._window_start, self._window_count = self._now(), int(self.rate or 0)
        self.windows.append((self._window_start, self._window_count))

    async def check(self) -> list[Check]:
        return [Check("idp", True)]

    async def find_user(self, email: str) -> IdpUser | None:
        return IdpUser(id=email, email=email)

    async def list_members(self, group: str) -> list[IdpUser]:
        return [IdpUser(id=e, email=e) for e in sorted(self.members.get(group, ()))]

    async def grant(self, user: IdpUser, target: Target, *, grant_id: str, expires_at: datetime) -> GrantResult:
        self._admit()
        group = self.members.setdefault(target.id, set())
        added = user.email not in group
        group.add(user.email)
        return GrantResult(added=added)

    async def revoke(self, user: IdpUser, target: Target, *, grant_id: str) -> None:
        self._admit()
        if grant_id in self.revoked_at:
            self.revoked_twice += 1
            raise AssertionError(f"revoked twice: {grant_id}")
        self.revoked_at[grant_id] = time.time()
        self.members.get(target.id, set()).discard(user.email)

    async def is_member(self, user: IdpUser, target: Target) -> bool:
        return user.email in self.members.get(target.id, ())

    async def aclose(self) -> None:
        return None


class CpuLimit:
    """A Linux control group that holds its processes to ``cores`` CPUs (CFS quota), like a container's
    CPU limit: `with CpuLimit("replica0", 0.5) as g: Popen(..., preexec_fn=g.enter)`. Needs root and a
    mounted cpu controller (cgroup v1 ``/sys/fs/cgroup/cpu`` or v2 ``cpu.max``); raises OSError if the
    machine has neither, so a benchmark never reports a limit it did not apply."""

    V1, V2 = "/sys/fs/cgroup/cpu", "/sys/fs/cgroup/unified"
    PERIOD_US = 100_000

    def __init__(self, name: str, cores: float) -> None:
        if cores <= 0:
            raise ValueError("cores must be > 0")
        quota = int(cores * self.PERIOD_US)
        if os.path.exists(f"{self.V1}/cpu.cfs_quota_us"):
            self.path = f"{self.V1}/jitbot-bench-{name}-{os.getpid()}"
            os.makedirs(self.path, exist_ok=True)
            self._write("cpu.cfs_period_us", str(self.PERIOD_US))
            self._write("cpu.cfs_quota_us", str(quota))
        else:
            root = "/sys/fs/cgroup" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else self.V2
            if "cpu" not in open(f"{root}/cgroup.controllers").read().split():  # noqa: SIM115
                raise OSError(f"no cpu controller in {root}")
            self.path = f"{root}/jitbot-bench-{name}-{os.getpid()}"
            os.makedirs(self.path, exist_ok=True)
            self._write("cpu.max", f"{quota} {self.PERIOD_US}")
        self.cores = cores

    def _write(self, name: str, value: str) -> None:
        with open(f"{self.path}/{name}", "w") as f:
            f.write(value)

    def enter(self) -> None:
        """Move the calling process into the group (use as ``preexec_fn``: the child and its threads)."""
        self._write("cgroup.procs", str(os.getpid()))

    def throttled_s(self) -> float:
        """Time the group's processes were held back by the quota so far (seconds)."""
        try:
            with open(f"{self.path}/cpu.stat") as f:
                stat = dict(line.split() for line in f if line.strip())
        except OSError:
            return float("nan")
        if "throttled_time" in stat:  # v1: nanoseconds
            return int(stat["throttled_time"]) / 1e9
        return int(stat.get("throttled_usec", 0)) / 1e6

    def close(self) -> None:
        for _ in range(50):
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:  # still has (exiting) processes
                time.sleep(0.1)

    def __enter__(self) -> CpuLimit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
