"""The playground drives any persona, so only the person at this machine may use it: every endpoint
answers loopback host names only (no DNS rebinding) and refuses requests from other origins (no
cross-site requests); and it does not start on a policy with real identity providers unless told to."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot.playground.main import DEMO_POLICY, PlaygroundRefused, Running, run_playground, start_playground


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    async with start_playground(0, database=f"sqlite+aiosqlite:///{tmp_path / 'pg.db'}") as r:
        yield r


async def _status(session: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str]) -> int:
    body = {"user": "U0ALICE", "text": "help"} if method == "POST" else None
    async with session.request(method, url, json=body, headers=headers) as res:
        return res.status


async def test_other_hosts_and_origins_are_refused_on_every_endpoint(running: Running) -> None:
    port = running.url.rsplit(":", 1)[1]
    endpoints = [("GET", "/"), ("GET", "/api/state?user=U0ALICE"), ("GET", "/static/app.js"),
                 ("POST", "/api/command"), ("POST", "/api/home")]
    refused = [{"Host": "evil.example"}, {"Host": f"evil.example:{port}"},
               {"Host": f"127.0.0.1.evil.example:{port}"}, {"Origin": "http://evil.example"},
               {"Host": "evil.example", "Origin": "http://evil.example"}, {"Origin": "null"},
               {"Origin": "http://localhost:1"}, {"Origin": f"https://evil.example:{port}"},
               {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}]
    allowed = [{}, {"Host": f"localhost:{port}"}, {"Host": f"[::1]:{port}"}, {"Host": f"LOCALHOST:{port}"},
               {"Origin": f"http://127.0.0.1:{port}"}, {"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"},
               {"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}]
    before = len(running.playground.slack.ephemerals("U0ALICE"))
    async with aiohttp.ClientSession() as session:
        got = {(m, p, tuple(h.items())): await _status(session, m, running.url + p, h)
               for m, p in endpoints for h in refused}
        assert set(got.values()) == {403}, {k: v for k, v in got.items() if v != 403}
        assert len(running.playground.slack.ephemerals("U0ALICE")) == before  # no command ran
        ok = {(m, p, tuple(h.items())): await _status(session, m, running.url + p, h)
              for m, p in endpoints for h in allowed}
        assert set(ok.values()) == {200}, {k: v for k, v in ok.items() if v != 200}


def _real_policy(tmp_path: Path) -> Path:
    path = tmp_path / "real.yml"
    path.write_text(DEMO_POLICY.read_text().replace(
        "connectors:\n", "connectors:\n  corp:\n    type: okta\n    org_url: https://example.okta.com\n"
                         "    api_token: not-a-real-token\n", 1))
    return path


async def test_a_policy_with_real_connectors_does_not_start_unless_told(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    policy = _real_policy(tmp_path)
    with pytest.raises(PlaygroundRefused, match="corp \\(okta\\)"):
        async with start_playground(0, policy=policy, database=f"sqlite+aiosqlite:///{tmp_path / 'a.db'}"):
            pass
    assert await run_playground(0, policy=policy, database=f"sqlite+aiosqlite:///{tmp_path / 'b.db'}") == 2
    err = capsys.readouterr().err
    assert "corp (okta)" in err and "--real-connectors" in err
    assert not (tmp_path / "a.db").exists() and not (tmp_path / "b.db").exists()  # nothing was started
