"""The playground's bundle: requested in the modal, approved once per layer, granted as both members."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot.playground.main import Running, start_playground
from tests.playground.test_world import Page, _choose, demo_without_step_up


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Page]:
    running: Running
    policy, database = demo_without_step_up(tmp_path), f"sqlite+aiosqlite:///{tmp_path / 'pg.db'}"
    async with start_playground(0, policy=policy, database=database) as running, \
            aiohttp.ClientSession() as session:
        yield Page(running.url, session)


async def _approve(page: Page, user: str) -> None:
    state = await page.state(user)
    message = state["dms"][-1]
    assert "bundle of: prod-admin, readonly" in str(message["blocks"])  # every item, to every approver
    res = await page.post("click", {"user": user, "channel": state["dm_channel"], "ts": message["ts"],
                                    "action_id": "jit_approve"})
    assert res["ok"], res


async def test_a_bundle_is_requested_approved_and_granted_whole_then_released_together(page: Page) -> None:
    modal = await _choose(page, "U0ALICE", "admin-and-console")
    res = await page.post("submit", {"user": "U0ALICE", "view_id": modal["id"], "values": {
        "justification/justification_input": "migrate the schema", "ticket/ticket_input": "OPS-7"}})
    assert res["ok"], res
    await _approve(page, "U0BOB")
    await _approve(page, "U0DAVE")
    texts = [m["text"] for m in (await page.state("U0ALICE"))["dms"]]
    assert any("You now have admin-and-console" in t for t in texts), texts
    assert any("You now have readonly" in t for t in texts), texts
    member = next(m.group(1) for t in texts if (m := re.search(r"Your request (R-\w+) for readonly", t)))
    assert (await page.post("command", {"user": "U0ALICE", "text": f"/jit release {member}"}))["ok"]
    texts = [m["text"] for m in (await page.state("U0ALICE"))["dms"]]
    assert any("a bundle is granted and kept all or nothing" in t for t in texts), texts
