"""The playground without a browser: its JSON endpoints drive the real bot through signed requests."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from bot.playground.main import DEMO_POLICY, Running, run_playground, start_playground
from bot.playground.world import personas_from
from bot.policy_file import load_policy


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    async with start_playground(0, database=f"sqlite+aiosqlite:///{tmp_path / 'pg.db'}") as r:
        yield r


class Page:
    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url, self.session = url, session

    async def post(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.session.post(f"{self.url}/api/{name}", json=body) as res:
            assert res.status == 200, await res.text()
            out: dict[str, Any] = await res.json()
            return out

    async def state(self, user: str) -> dict[str, Any]:
        async with self.session.get(f"{self.url}/api/state", params={"user": user}) as res:
            assert res.status == 200, await res.text()
            out: dict[str, Any] = await res.json()
            return out


@pytest.fixture
async def page(running: Running) -> AsyncIterator[Page]:
    async with aiohttp.ClientSession() as session:
        yield Page(running.url, session)


def demo_without_step_up(tmp_path: Path) -> Path:
    """The demo policy with no step-up (the browser test walks that): approvals by clicks alone."""
    doc = yaml.safe_load(DEMO_POLICY.read_text())
    for elig in doc["eligibilities"]:
        elig.pop("step_up", None)
        for layer in elig.get("approvals", []):
            layer.pop("step_up", None)
    path = tmp_path / "demo-without-step-up.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
async def plain_page(tmp_path: Path) -> AsyncIterator[Page]:
    """A page on the demo policy without step-up."""
    async with start_playground(0, policy=demo_without_step_up(tmp_path),
                                database=f"sqlite+aiosqlite:///{tmp_path / 'pg.db'}") as running, \
            aiohttp.ClientSession() as session:
        yield Page(running.url, session)


def test_personas_come_from_the_demo_policy() -> None:
    roles = {p.name: (p.id, p.role) for p in personas_from(load_policy(DEMO_POLICY))}
    assert roles == {"alice": ("U0ALICE", "requester"), "bob": ("U0BOB", "layer-1 approver"),
                     "carol": ("U0CAROL", "layer-1 approver"), "dave": ("U0DAVE", "layer-2 approver"),
                     "erin": ("U0ERIN", "layer-2 approver"), "root": ("U0ROOT", "admin")}


async def test_page_and_static_files_are_served(running: Running, page: Page) -> None:
    for path in ("/", "/static/app.js", "/static/blockkit.js", "/static/app.css"):
        async with page.session.get(running.url + path) as res:
            assert res.status == 200, path
    assert (await page.state("U0ALICE"))["audit_channel"] == "C0AUDIT"
    async with page.session.get(f"{running.url}/api/state", params={"user": "U0NOBODY"}) as res:
        assert res.status == 404


async def test_deny_through_the_reason_modal(page: Page) -> None:
    assert (await page.post("command", {"user": "U0ALICE", "text": "/jit"}))["ok"]
    modal = (await page.state("U0ALICE"))["modals"][-1]
    res = await page.post("submit", {"user": "U0ALICE", "view_id": modal["id"], "values": {
        "justification/justification_input": "Rotate the <secrets>", "ticket/ticket_input": "OPS-7"}})
    assert res["ok"] and (await page.state("U0ALICE"))["modals"] == []

    bob = await page.state("U0BOB")
    message = bob["dms"][-1]
    assert "&lt;secrets&gt;" in str(message["blocks"])
    res = await page.post("click", {"user": "U0BOB", "channel": bob["dm_channel"], "ts": message["ts"],
                                    "action_id": "jit_deny_open"})
    assert res["ok"], res
    deny = (await page.state("U0BOB"))["modals"][-1]
    # an empty reason: Slack's client refuses and the modal shows the error inline
    res = await page.post("submit", {"user": "U0BOB", "view_id": deny["id"], "values": {}})
    assert res["client_errors"] == {"reason": "This field is required."}
    assert (await page.state("U0BOB"))["modals"][-1]["errors"] == {"reason": "This field is required."}
    res = await page.post("submit", {"user": "U0BOB", "view_id": deny["id"],
                                     "values": {"reason/reason_input": "change freeze"}})
    assert res["ok"], res
    alice = await page.state("U0ALICE")
    assert any("change freeze" in m["text"] for m in alice["dms"])
    assert any("denied" in r["text"] for r in (await page.state("U0ROOT"))["audit"][0]["replies"])


async def test_unknown_commands_and_bad_requests_are_answered(page: Page) -> None:
    assert (await page.post("command", {"user": "U0ALICE", "text": "hello"}))["ok"] is False
    assert "not a valid command" in (await page.post("command", {"user": "U0ALICE", "text": "/deploy"}))["error"]
    assert (await page.post("command", {"user": "U0ALICE", "text": "/jit help"}))["ok"]
    assert any("/jit list" in e["text"] for e in (await page.state("U0ALICE"))["ephemerals"])
    res = await page.post("click", {"user": "U0ALICE", "channel": "D0", "ts": "1.0", "action_id": "x"})
    assert res["ok"] is False
    async with page.session.post(f"{page.url}/api/clock", json={"minutes": -5}) as raw:
        assert raw.status == 400


async def test_clock_jump_moves_the_bot_clock(running: Running, page: Page) -> None:
    before = running.playground.clock.now()
    res = await page.post("clock", {"minutes": 60})
    assert res["ok"]
    assert (running.playground.clock.now() - before).total_seconds() >= 3600
    assert (await page.state("U0ALICE"))["offset_s"] == 3600


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_run_playground_stops_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stop = asyncio.Event()
    port = _free_port()
    task = asyncio.create_task(run_playground(port, database=f"sqlite+aiosqlite:///{tmp_path / 'run.db'}",
                                              stop=stop))
    for _ in range(100):
        if f"http://127.0.0.1:{port}" in capsys.readouterr().out:
            break
        await asyncio.sleep(0.05)
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/") as res:
        assert res.status == 200
    stop.set()
    assert await asyncio.wait_for(task, 10) == 0


async def _choose(page: Page, user: str, eligibility: str) -> dict[str, Any]:
    """Open /jit and choose ``eligibility`` (the modal is re-rendered for it); the open modal."""
    assert (await page.post("command", {"user": user, "text": "/jit"}))["ok"]
    modal = (await page.state(user))["modals"][-1]
    res = await page.post("view_action", {"user": user, "view_id": modal["id"], "action_id": "eligibility_select",
                                          "block_id": "eligibility", "choice": eligibility})
    assert res["ok"], res
    out: dict[str, Any] = (await page.state(user))["modals"][-1]
    return out


async def test_on_call_persona_is_approved_at_once_until_the_shift_ends(page: Page) -> None:
    modal = await _choose(page, "U0ALICE", "oncall-db")
    res = await page.post("submit", {"user": "U0ALICE", "view_id": modal["id"], "values": {
        "justification/justification_input": "paged: replication lag"}})
    assert res["ok"], res
    alice = await page.state("U0ALICE")
    assert any("You now have oncall-db" in m["text"] for m in alice["dms"])
    assert not (await page.state("U0BOB"))["dms"]  # nobody was asked
    await page.post("clock", {"minutes": 4 * 60})  # the fake PagerDuty shift is four hours
    alice = await page.state("U0ALICE")
    assert any("expired" in m["text"].lower() or "ended" in m["text"].lower() for m in alice["dms"][-2:]), \
        [m["text"] for m in alice["dms"]]


async def test_jira_ticket_is_checked_in_the_modal_and_shown_to_the_approver(page: Page) -> None:
    modal = await _choose(page, "U0ALICE", "incident-console")
    res = await page.post("submit", {"user": "U0ALICE", "view_id": modal["id"], "values": {
        "justification/justification_input": "incident", "ticket/ticket_input": "OPS-102"}})
    assert res["ok"], res
    modal = (await page.state("U0ALICE"))["modals"][-1]
    assert "'Done'" in modal["errors"]["ticket"]
    res = await page.post("submit", {"user": "U0ALICE", "view_id": modal["id"], "values": {
        "justification/justification_input": "incident", "ticket/ticket_input": "OPS-101"}})
    assert res["ok"], res
    bob = await page.state("U0BOB")
    assert "|OPS-101> Checkout latency &lt;p99&gt; over 2 s (In Progress)" in str(bob["dms"][-1]["blocks"])


async def test_an_approver_channel_and_an_approval_for_less(plain_page: Page) -> None:
    """The demo policy posts prod-admin's layer 1 in #prod-approvals: a stranger's click there changes nothing,
    carol approves for less there, the post is edited in place, and layer 2 approves what stands (by a click:
    the policy here has no step-up)."""
    page = plain_page
    assert (await page.post("command", {"user": "U0ALICE", "text": "/jit"}))["ok"]
    modal = (await page.state("U0ALICE"))["modals"][-1]
    assert (await page.post("submit", {"user": "U0ALICE", "view_id": modal["id"], "values": {
        "justification/justification_input": "deploy", "ticket/ticket_input": "OPS-7",
        "duration/duration_select": "14400"}}))["ok"]
    carol = await page.state("U0CAROL")
    [channel] = carol["channels"]
    assert channel["name"] == "prod-approvals"
    [post] = channel["messages"]
    rid = post["text"].split("Access request ")[1].split()[0]
    # dave (layer 2) clicks layer 1's Approve in the channel: told privately, nothing changes
    await page.post("click", {"user": "U0DAVE", "channel": channel["id"], "ts": post["ts"], "action_id": "jit_approve"})
    dave = await page.state("U0DAVE")
    assert any("not an approver" in e["text"] for e in dave["ephemerals"]), dave["ephemerals"]
    assert not dave["channels"][0]["messages"][0]["edited"]
    res = await page.post("click", {"user": "U0CAROL", "channel": channel["id"], "ts": post["ts"],
                                    "action_id": "jit_approve_for", "choice": f"{rid}:1:3600"})
    assert res["ok"], res
    edited = (await page.state("U0CAROL"))["channels"][0]["messages"][0]
    assert edited["edited"] and "Approved by carol@example.com" in str(edited["blocks"])
    alice = await page.state("U0ALICE")
    assert any("approved it for 1h instead of 4h" in m["text"] for m in alice["dms"])
    ask = [m for m in (await page.state("U0DAVE"))["dms"] if "needs your decision" in m["text"]][-1]
    assert "1h" in str(ask["blocks"])
    res = await page.post("click", {"user": "U0DAVE", "channel": (await page.state("U0DAVE"))["dm_channel"],
                                    "ts": ask["ts"], "action_id": "jit_approve"})
    assert res["ok"], res
    assert any("You now have" in m["text"] for m in (await page.state("U0ALICE"))["dms"])
