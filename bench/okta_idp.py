"""``bench.mass_expiry --idp okta``: the mass expiry through the real Okta connector (the okta SDK over
TLS, wrapped in ``ResilientConnector`` as in production) against the project's strict fake Okta org
(tests/fakes/idp/okta.py) on 127.0.0.1.

With ``--rate R`` the fake enforces Okta's own kind of limit (tests/fakes/idp/okta_limits.py): a budget
of R × window calls per window, windows aligned to the epoch like Okta's minute, ``X-Rate-Limit-*``
headers on every answer and 429 ``E0000047`` over the budget — the connector learns its pace from those
headers alone. The fake runs in a process of its own (``python -m bench.okta_idp``), as a provider is
elsewhere: its CPU is not the bot's. It reports what it recorded when it is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import web

from connectors.base import Connector
from connectors.okta import from_settings
from tests.fakes.idp.okta import FakeOkta
from tests.fakes.idp.okta_limits import OktaRateLimit
from tests.fakes.idp.tls import localhost_tls

TOKEN = "00bench-okta-token"
_ID = re.compile(r"\b00[ug][0-9A-Za-z]{17}\b")  # Okta user and group ids, for counting calls by kind


class RecordedOkta(FakeOkta):
    """Records when each grant's membership was removed (the revoke reaching Okta), and how often."""

    def __init__(self) -> None:
        super().__init__(api_token=TOKEN, page_size=200)
        self.grant_of: dict[str, str] = {}  # Okta user id → grant id
        self.revoked_at: dict[str, float] = {}  # grant id → time the DELETE reached Okta
        self.removals: Counter[str] = Counter()
        self.group = ""

    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        at = time.time()
        response = await super()._gate(request, handler)
        if request.method == "DELETE" and response.status == 204 and request.path.startswith("/api/v1/groups/"):
            uid = request.path.rsplit("/", 1)[1]
            self.removals[uid] += 1
            self.revoked_at.setdefault(self.grant_of.get(uid, uid), at)
        return response

    # what bench.mass_expiry reads of its IdP
    @property
    def revoked_twice(self) -> int:
        return sum(n - 1 for n in self.removals.values() if n > 1)

    @property
    def throttled(self) -> int:
        return self.rate_limit.refused if self.rate_limit else 0

    @property
    def calls(self) -> int:
        return self.api_calls

    def still_members(self) -> int:
        return len(self.members[self.group])

    def windowed_rate(self) -> float:
        """Admitted calls per second over the budget's complete windows opened after the first revoke
        (before it the worker only checked memberships, far below the budget)."""
        if self.rate_limit is None or not self.revoked_at:
            return float("nan")
        return self.rate_limit.achieved_rate(after=min(self.revoked_at.values()))


def bulk_spec(n: int) -> dict[str, Any]:
    """bench.mass_expiry's org: ``n`` users, all members of ``jit-bulk``; user i holds grant ``G-M<i>``."""
    users = [f"user{i}@example.com" for i in range(n)]
    return {"users": users, "groups": {"jit-bulk": users}, "watch": "jit-bulk",
            "grant_of": {u: f"G-M{i:07d}" for i, u in enumerate(users)}}


async def serve(spec: dict[str, Any], rate: float | None, window: int, report: Path) -> None:
    """The fake org of ``spec`` (``users``; ``groups``: name → member emails; ``watch``: the group whose
    members are counted at the end; ``grant_of``: email → grant id); ``report`` + ``.ready`` says where it
    is; on SIGTERM it writes what it recorded to ``report`` and ends."""
    context, ca_file = localhost_tls()
    fake = RecordedOkta()
    fake.check_spec = False  # the conformance suite holds the fake to Okta's OpenAPI; here it would cost CPU
    await fake.start(context)
    ids = {email: fake.add_user(email) for email in spec["users"]}
    groups = {name: fake.add_group(name, [ids[e] for e in members]) for name, members in spec["groups"].items()}
    fake.group = groups[spec["watch"]]
    fake.grant_of = {ids[email]: grant for email, grant in spec.get("grant_of", {}).items()}
    if rate:
        fake.rate_limit = OktaRateLimit(int(round(rate * window)), window)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    ready = {"base_url": fake.base_url, "ca_file": ca_file, "ids": ids, "groups": groups}
    Path(f"{report}.ready").write_text(json.dumps(ready))
    await stop.wait()
    await fake.stop()
    report.write_text(json.dumps({
        "revoked_at": fake.revoked_at, "revoked_twice": fake.revoked_twice, "throttled": fake.throttled,
        "calls": fake.calls, "still_members": fake.still_members(), "windowed": fake.windowed_rate(),
        "by_kind": Counter(f"{m} {_ID.sub('{id}', path)}" for m, path in fake.requests)}))


def settings(info: dict[str, Any]) -> dict[str, Any]:
    """The ``connectors:`` entry that reaches the fake (API token, its throwaway CA)."""
    return {"type": "okta", "org_url": info["base_url"], "api_token": TOKEN, "ca_file": info["ca_file"],
            "timeout": 10}


class OktaProcess:
    """The parent's side: starts ``serve`` in a process and reads its report once stopped (the same
    figures ``bench.mass_expiry`` reads of its in-process IdP)."""

    def __init__(self, report: Path) -> None:
        self.report = report
        self.proc: asyncio.subprocess.Process | None = None
        self.revoked_at: dict[str, float] = {}
        self.revoked_twice = self.throttled = self.calls = self._still = 0
        self.by_kind: dict[str, int] = {}  # "GET /api/v1/users/{id}/groups" → calls
        self._windowed = float("nan")

    async def start(self, spec: dict[str, Any], rate: float | None = None, window: int = 1) -> dict[str, Any]:
        """Where the fake is (``base_url``, ``ca_file``), email → Okta user id (``ids``), group name → id
        (``groups``)."""
        spec_file = Path(f"{self.report}.spec")
        spec_file.write_text(json.dumps(spec))
        args = ["--spec", str(spec_file), "--window", str(window), "--report", str(self.report)]
        self.proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bench.okta_idp", *args,
                                                         *(["--rate", str(rate)] if rate else []))
        ready = Path(f"{self.report}.ready")
        for _ in range(1200):
            if ready.exists() or self.proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        if not ready.exists():
            raise RuntimeError("the fake Okta did not start")
        info: dict[str, Any] = json.loads(ready.read_text())
        return info

    def connector(self, info: dict[str, Any]) -> Connector:
        return from_settings("idp", settings(info))

    async def finish(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        await self.proc.wait()
        got = json.loads(self.report.read_text())
        self.revoked_at, self.revoked_twice = got["revoked_at"], got["revoked_twice"]
        self.throttled, self.calls, self._still = got["throttled"], got["calls"], got["still_members"]
        self.by_kind = got["by_kind"]
        self._windowed = float(got["windowed"]) if got["windowed"] is not None else float("nan")

    def still_members(self) -> int:
        return self._still

    def windowed_rate(self) -> float:
        return self._windowed


def main() -> None:
    parser = argparse.ArgumentParser(description="the fake Okta org of bench.mass_expiry --idp okta")
    parser.add_argument("--spec", type=Path, required=True, help="users and groups (JSON, see serve)")
    parser.add_argument("--rate", type=float, default=None)
    parser.add_argument("--window", type=int, default=1)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(serve(json.loads(args.spec.read_text()), args.rate, args.window, args.report))


if __name__ == "__main__":
    main()
