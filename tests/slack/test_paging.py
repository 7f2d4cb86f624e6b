"""/jit list and App Home are paged: any number of grants and requests stays within Slack's limits,
and every one can be reached (and released) from some page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import yaml

from bot.fakes.blockkit import validate_view
from bot.services.clock import ManualClock
from bot.slack import app_home, ids
from tests.conftest import POLICY, DbFactory
from tests.slack.harness import slack_env

N = 20


def _snap(n: int, status: str = "active") -> dict[str, object]:
    return {"id": f"R-{n:08d}", "eligibility": f"eligibility-{n:04d}-" + "x" * 40, "status": status, "layer": 1,
            "layers": 2, "expires_at": datetime(2026, 1, 5, 12, tzinfo=UTC).isoformat()}


def test_jit_list_of_a_thousand_grants_is_paged_under_slacks_limit() -> None:
    active = [_snap(n) for n in range(1000)]
    first = app_home.access_list(active, [], page=1)
    assert first.count("• ") == app_home.LIST_PAGE and len(first) < 40_000
    assert "Page 1 of 40 (1000 in all) — `/jit list 2` for the next" in first
    last = app_home.access_list(active, [], page=99)  # past the end: the last page
    assert "R-00000999" in last and "Page 40 of 40" in last and "for the next" not in last
    assert "Page" not in app_home.access_list(active[:3], [])


def test_app_home_pages_hold_fifteen_releasable_grants_each_and_stay_valid() -> None:
    active = [_snap(n) for n in range(40)]
    for page in (1, 2, 3):
        view = app_home.home_view(active=active, pending=[], approvals=[], page=page)
        assert validate_view(view) == []
        releases = [b["accessory"]["value"] for b in view["blocks"] if b.get("accessory", {}).get("action_id", "")
                    .startswith(ids.RELEASE)]
        assert releases == [f"R-{n:08d}" for n in range((page - 1) * 15, min(page * 15, 40))]
        nav = [e["text"]["text"] for b in view["blocks"] if b.get("block_id") == "home_pages" for e in b["elements"]]
        assert nav == {1: ["Next page"], 2: ["Previous page", "Next page"], 3: ["Previous page"]}[page]


def _policy() -> str:
    doc = yaml.safe_load(POLICY)
    for n in range(N):
        doc["connectors"]["demo"]["groups"][f"g{n}"] = []
        doc["eligibilities"].append({"name": f"e{n:02d}", "description": f"Console {n}", "connector": "demo",
                                     "target": {"group": f"g{n}"}, "requestors": {"groups": ["engineers"]},
                                     "max_duration": "4h"})
    return yaml.safe_dump(doc, sort_keys=False)


async def test_the_next_page_button_shows_the_rest_of_the_home(db_factory: DbFactory, clock: ManualClock) -> None:
    async with slack_env(db_factory(), _policy(), clock) as env:
        for n in range(N):
            await env.stack.requests.submit(requester="alice@example.com", eligibility=f"e{n:02d}",
                                            duration=timedelta(hours=1), justification="many consoles")
        await env.settle()
        await env.sender.open_home("U1ALICE")

        def released() -> list[str]:
            home = env.slack.home("U1ALICE")
            assert home is not None
            return [b["accessory"]["value"] for b in home.blocks
                    if b.get("accessory", {}).get("action_id", "").startswith(ids.RELEASE)]

        first = released()
        assert len(first) == 15
        home = env.slack.home("U1ALICE")
        assert home is not None
        await env.sender.click_in_view("U1ALICE", home.id, ids.nth(ids.HOME_PAGE, 1))
        second = released()
        assert len(second) == N - 15 and not set(first) & set(second)
