"""Malformed requests to ``jitbot serve``'s ``POST /slack/events``: the signature is checked on the raw
bytes before anything in the request is read. Unsigned (or badly signed) garbage is answered 401, signed
garbage 400; either way one warning line, no traceback, no error-level log, and nothing changes."""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import aiohttp

from bot.fakes import FakeSlack
from tests.reliability.procs import AUDIT, SERVE_POLICY, SERVE_USERS, Proc, free_port, healthy, until

TOKEN, SECRET = "xoxb-malformed-test", "malformed-test-secret"
FORM = "application/x-www-form-urlencoded"

# (name, body, content type)
BODIES: list[tuple[str, bytes, str]] = [
    ("payload not JSON", b"payload=%7Bnot-json", FORM),
    ("payload a JSON array", b"payload=%5B1%5D", FORM),
    ("JSON body an array", b"[1]", "application/json"),
    ("JSON body not JSON", b"{not-json", "application/json"),
    ("non-UTF-8 body", b"payload=\xff\xfe%7B%7D", FORM),
    ("non-UTF-8 command", b"command=%2Fjit&text=\xe9t\xe9&user_id=U1ALICE", FORM),
    ("bogus charset", b"command=%2Fjit&text=x", FORM + "; charset=bogus-42"),
]
TIMESTAMPS = ["abc", "", "1e3", " 1", "\u0661\u0662", "1_000", "-1", "99999999999999999999999"]


def _signed(body: bytes, timestamp: str, secret: str = SECRET) -> dict[str, str]:
    base = b"v0:" + timestamp.encode() + b":" + body
    return {"X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()}


def _rows(tmp_path: Path) -> list[int]:
    with closing(sqlite3.connect(tmp_path / "jit.db")) as db:
        return [db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("access_request", "event", "outbox", "approval_vote", '"grant"')]


async def test_malformed_requests_are_refused_before_parsing_with_one_warning_each(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yml"
    policy.write_text(SERVE_POLICY)
    slack = FakeSlack(token=TOKEN)
    for uid, name in SERVE_USERS.items():
        slack.add_user(uid, name, real_name=name.title(), email=f"{name}@example.com")
    slack.add_channel(AUDIT, "jit-audit")
    port = free_port()
    url = f"http://127.0.0.1:{port}/slack/events"
    env = {"SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET, "DATABASE_URL":
           f"sqlite+aiosqlite:///{tmp_path / 'jit.db'}", "JITBOT_POLICY": str(policy)}
    statuses: dict[str, int] = {}
    async with slack:
        env["SLACK_API_URL"] = slack.url
        proc = Proc(["serve", "--port", str(port), "--no-worker"], env, tmp_path / "serve.log", tmp_path)
        try:
            await until(lambda: healthy(port), timeout=30, what="serve", procs=[proc])
            before, rows_before = proc.output(), _rows(tmp_path)
            async with aiohttp.ClientSession() as http:
                async def post(name: str, body: bytes, content_type: str, headers: dict[str, str]) -> None:
                    async with http.post(url, data=body, headers={"Content-Type": content_type, **headers}) as res:
                        statuses[name] = res.status

                now = str(int(time.time()))
                for name, body, ctype in BODIES:
                    await post("unsigned " + name, body, ctype, {})
                    await post("wrongly signed " + name, body, ctype, _signed(body, now, "not-the-secret"))
                    await post("signed " + name, body, ctype, _signed(body, now))
                for ts in TIMESTAMPS:
                    body = b"command=%2Fjit&text=help&user_id=U1ALICE"
                    await post(f"timestamp {ts!r}", body, FORM, _signed(body, ts))
                await post("signature not hex", b"[1]", "application/json",
                           {"X-Slack-Request-Timestamp": now, "X-Slack-Signature": "v0=" + "z" * 64})
            await until(lambda: healthy(port), timeout=5, what="serve still up", procs=[proc])
        finally:
            proc.stop()
    expected = {**{f"unsigned {n}": 401 for n, *_ in BODIES}, **{f"wrongly signed {n}": 401 for n, *_ in BODIES},
                **{f"signed {n}": 400 for n, *_ in BODIES}, **{f"timestamp {t!r}": 401 for t in TIMESTAMPS},
                "signature not hex": 401}
    assert statuses == expected
    log = proc.output()[len(before):]
    assert "Traceback" not in log and " ERROR " not in log, log
    warnings = [line for line in log.splitlines() if " WARNING " in line]
    assert len(warnings) == len(expected), "\n".join(warnings)
    assert all("refused a Slack request" in w for w in warnings), warnings
    assert _rows(tmp_path) == rows_before
