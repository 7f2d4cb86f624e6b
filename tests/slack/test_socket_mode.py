"""``jitbot serve`` in Socket Mode — the real process, Bolt's Socket Mode adapter and slack_sdk's aiohttp
client — against the fake Slack's Socket Mode (bot/fakes/slack_socket.py): no inbound HTTP from Slack;
every request arrives as an envelope on the bot's WebSocket and is answered by its acknowledgement.
One request's whole way (command, a field error, the submission, the approval, the grant, App Home),
the reconnection Slack asks for now and then, health while Slack is unreachable and after, and no HTTP
route for Slack without a signing secret. Tokens Slack refuses, for ``serve`` and for ``jitbot worker``
alone: said once, and the worker goes on."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp

from bot.fakes import FakeSlack
from bot.fakes.socket_sender import SocketModeSender
from bot.slack import ids
from tests.reliability.procs import SERVE_POLICY, Proc, approve_message, free_port, healthy, serve_slack, until

TOKEN, APP_TOKEN = "xoxb-socket-test-token", "xapp-1-A0JITBOT01-1-socket-test"


async def _health(port: int) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz") as res:
        return dict(await res.json())


async def _metrics(port: int) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as res:
        return await res.text()


def _world(tmp_path: Path, *, app_token: str = APP_TOKEN,
           bot_token: str = TOKEN) -> tuple[FakeSlack, dict[str, str]]:
    policy = tmp_path / "policy.yml"
    policy.write_text(SERVE_POLICY)
    slack = serve_slack(TOKEN, app_token=APP_TOKEN)
    env = {"SLACK_BOT_TOKEN": bot_token, "SLACK_APP_TOKEN": app_token, "DATABASE_URL":
           f"sqlite+aiosqlite:///{tmp_path / 'jit.db'}", "JITBOT_POLICY": str(policy)}
    return slack, env


def _worker_ticks(tmp_path: Path) -> int:
    with contextlib.closing(sqlite3.connect(tmp_path / "jit.db")) as db:
        return int(db.execute("SELECT coalesce(max(ticks), 0) FROM worker_heartbeat").fetchone()[0])


def _socket_of(slack: FakeSlack) -> Any:
    assert slack.socket_mode is not None
    return slack.socket_mode


async def test_serve_in_socket_mode_carries_a_request_from_command_to_grant(tmp_path: Path) -> None:
    slack, env = _world(tmp_path)
    socket = _socket_of(slack)
    async with slack:
        port = free_port()
        env["SLACK_API_URL"] = slack.url
        proc = Proc(["serve", "--port", str(port)], env, tmp_path / "serve.log", tmp_path)
        sender = SocketModeSender(slack)
        try:
            await until(lambda: healthy(port), timeout=30, what="serve", procs=[proc])

            async def connected() -> bool:
                return socket.connections == 1

            await until(connected, timeout=10, what="a Socket Mode connection", procs=[proc])
            # the token checked (its answer used up), then the connection's own
            assert len(slack.calls("apps.connections.open")) == 2 and len(slack.calls("auth.test")) == 1

            # /jit: acknowledged on the socket, then the modal opens
            assert (await sender.command("U1ALICE", "")).ok

            async def modal_open() -> bool:
                return bool(slack.modal_stack("U1ALICE"))

            await until(modal_open, timeout=10, what="the request modal", procs=[proc])
            modal = slack.modal_stack("U1ALICE")[-1]
            # a field error comes back in the acknowledgement's payload, as an HTTP answer's body would
            refused = await sender.submit_view("U1ALICE", modal.id, {ids.A_ELIGIBILITY: "app-admin",
                                                                     ids.A_JUSTIFICATION: "x" * 600})
            assert refused.ok and refused.body["response_action"] == "errors", refused.body
            assert ids.B_JUSTIFICATION in refused.body["errors"]
            assert slack.modal_stack("U1ALICE")  # still open
            submitted = await sender.submit_view("U1ALICE", modal.id, {
                ids.A_ELIGIBILITY: "app-admin", ids.A_JUSTIFICATION: "incident 7", ids.A_DURATION: "3600"})
            assert submitted.ok and submitted.body is None  # the empty answer: the modal closes
            assert slack.modal_stack("U1ALICE") == []

            async def asked() -> bool:
                return approve_message(slack, "U2BOB") is not None

            await until(asked, timeout=15, what="bob's approval message", procs=[proc])
            ask = approve_message(slack, "U2BOB")
            bob_dm = slack.im_channel("U2BOB")
            assert bob_dm is not None

            # Slack asks for a new connection now and then: the app opens one and goes on
            await socket.refresh()

            async def reconnected() -> bool:
                return socket.opened == 2 and socket.connections == 1

            await until(reconnected, timeout=15, what="the new connection", procs=[proc])
            assert len(slack.calls("apps.connections.open")) == 3

            assert (await sender.click("U2BOB", bob_dm, ask.ts, ids.APPROVE)).ok

            async def granted() -> bool:
                return any("You now have" in t for t in (m.text for m in slack.dm_messages("U1ALICE")))

            await until(granted, timeout=15, what="alice's grant", procs=[proc])

            # App Home: an events_api envelope, acknowledged without a payload, then views.publish
            assert (await sender.open_home("U1ALICE")).ok

            async def home() -> bool:
                return slack.home("U1ALICE") is not None

            await until(home, timeout=10, what="App Home", procs=[proc])
            assert socket.stray_acks == []

            assert (await _health(port))["socket_mode"] == "connected"

            # Slack goes away (the socket closed, no new one to be had): health says so, then recovers
            await slack.outage("503")
            await socket.close()

            async def cut_off() -> bool:
                health = await _health(port)
                return health["socket_mode"] == "disconnected" and health["status"] == "degraded"

            await until(cut_off, timeout=15, what="health reporting the lost socket", procs=[proc])
            assert "jitbot_socket_mode_connected 0" in await _metrics(port)
            await slack.end_outage()

            async def back() -> bool:
                return (await _health(port))["socket_mode"] == "connected" and socket.connections == 1

            await until(back, timeout=30, what="the socket back after the outage", procs=[proc])
            assert (await _health(port))["status"] == "ok"
            assert (await sender.command("U1ALICE", "")).ok  # requests arrive again

            # without a signing secret, no HTTP route takes Slack requests
            async with aiohttp.ClientSession() as http, http.post(
                    f"http://127.0.0.1:{port}/slack/events", data=b"payload=%7B%7D",
                    headers={"Content-Type": "application/x-www-form-urlencoded"}) as res:
                assert res.status == 404
        finally:
            # in a thread: this loop serves the fake's end of the socket, which answers the bot's close
            await asyncio.to_thread(proc.stop)
            await sender.aclose()
        assert proc.popen.returncode == 0, proc.output()[-3000:]


async def test_tokens_slack_refuses_are_said_once_and_the_worker_goes_on(tmp_path: Path) -> None:
    """A wrong app-level token and a wrong bot token: the process starts anyway (the worker must go on
    revoking), says each refusal once in one log line, health says "refused" — and the app token is not
    tried again (slack_sdk would retry it every 10 s, with a traceback each time)."""
    slack, env = _world(tmp_path, app_token="xapp-1-A0JITBOT01-1-typo", bot_token="xoxb-typo")
    async with slack:
        port = free_port()
        proc = Proc(["serve", "--port", str(port)], {**env, "SLACK_API_URL": slack.url}, tmp_path / "serve.log",
                    tmp_path)
        try:
            await until(lambda: healthy(port), timeout=30, what="serve", procs=[proc])

            async def refused() -> bool:
                return (await _health(port)).get("socket_mode", "").startswith("refused")

            await until(refused, timeout=10, what="health saying the token was refused", procs=[proc])
            health = await _health(port)
            assert health["socket_mode"] == health["slack_bot_token"] == "refused: invalid_auth"
            assert health["status"] == "degraded"

            async def worker_beats() -> bool:  # the worker runs: its heartbeat, once its first pass is written
                return (await _health(port)).get("worker_heartbeat_age_s") is not None

            await until(worker_beats, timeout=15, what="the worker's heartbeat", procs=[proc])
            ticks = _worker_ticks(tmp_path)

            async def worker_went_on() -> bool:  # three more of its passes
                return _worker_ticks(tmp_path) >= ticks + 3

            await until(worker_went_on, timeout=15, what="the worker's passes", procs=[proc])
            metrics = await _metrics(port)
            assert "jitbot_slack_bot_token_refused 1" in metrics and "jitbot_socket_mode_connected 0" in metrics
            assert len(slack.calls("apps.connections.open")) == 1 and _socket_of(slack).opened == 0
        finally:
            await asyncio.to_thread(proc.stop)
        log = proc.output()
        assert log.count("Slack refused SLACK_APP_TOKEN (invalid_auth)") == 1
        assert log.count("Slack refused SLACK_BOT_TOKEN (invalid_auth)") == 1
        assert "Traceback" not in log and "xapp-1-A0JITBOT01-1-typo" not in log and "xoxb-typo" not in log


async def test_serve_starts_while_slack_is_down_and_connects_when_it_is_back(tmp_path: Path) -> None:
    slack, env = _world(tmp_path)
    async with slack:
        await slack.outage("503")
        port = free_port()
        proc = Proc(["serve", "--port", str(port)], {**env, "SLACK_API_URL": slack.url}, tmp_path / "serve.log",
                    tmp_path)
        try:
            # health, metrics and the worker do not wait for Slack
            await until(lambda: healthy(port), timeout=30, what="serve", procs=[proc])
            health = await _health(port)
            assert health["socket_mode"] == "disconnected" and health["status"] == "degraded"
            assert "slack_bot_token" not in health  # unreachable is not refused
            await slack.end_outage()

            async def connected() -> bool:
                return (await _health(port))["socket_mode"] == "connected"

            await until(connected, timeout=30, what="the socket once Slack is back", procs=[proc])
        finally:
            await asyncio.to_thread(proc.stop)


async def test_the_worker_says_once_that_slack_refuses_its_bot_token_and_goes_on(tmp_path: Path) -> None:
    slack, env = _world(tmp_path, bot_token="xoxb-typo")
    env.pop("SLACK_APP_TOKEN")
    async with slack:
        proc = Proc(["worker", "--interval", "0.2"], {**env, "SLACK_API_URL": slack.url}, tmp_path / "worker.log",
                    tmp_path)
        try:
            async def said() -> bool:
                return "Slack refused SLACK_BOT_TOKEN (invalid_auth)" in proc.output()

            await until(said, timeout=30, what="the refusal in the log", procs=[proc])
            ticks = _worker_ticks(tmp_path)

            async def went_on() -> bool:
                return _worker_ticks(tmp_path) >= ticks + 3

            await until(went_on, timeout=15, what="the worker's passes", procs=[proc])
        finally:
            await asyncio.to_thread(proc.stop)
        log = proc.output()
        assert log.count("Slack refused SLACK_BOT_TOKEN") == 1 and "xoxb-typo" not in log
        assert proc.popen.returncode == 0, log[-2000:]
