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

from tests.reliability.procs import SERVE_POLICY, healthy, serve_slack, start_serve

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
    statuses: dict[str, int] = {}
    async with start_serve(serve_slack(TOKEN), tmp_path, policy=SERVE_POLICY, secret=SECRET,
                           database_url=f"sqlite+aiosqlite:///{tmp_path / 'jit.db'}", args=("--no-worker",)) as serve:
        url = f"http://127.0.0.1:{serve.port}/slack/events"
        before, rows_before = serve.proc.output(), _rows(tmp_path)
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
        await serve.until(lambda: healthy(serve.port), timeout=5, what="serve still up")
    expected = {**{f"unsigned {n}": 401 for n, *_ in BODIES}, **{f"wrongly signed {n}": 401 for n, *_ in BODIES},
                **{f"signed {n}": 400 for n, *_ in BODIES}, **{f"timestamp {t!r}": 401 for t in TIMESTAMPS},
                "signature not hex": 401}
    assert statuses == expected
    log = serve.proc.output()[len(before):]
    assert "Traceback" not in log and " ERROR " not in log, log
    warnings = [line for line in log.splitlines() if " WARNING " in line]
    # one warning per refusal, repeats rate-limited (bot/observability/logs.py: a flood of forged requests
    # writes a few lines a minute, the rest counted): never more lines than refusals, never none
    assert 1 <= len(warnings) <= len(expected), "\n".join(warnings)
    assert all("refused a Slack request" in w for w in warnings), warnings
    assert _rows(tmp_path) == rows_before
