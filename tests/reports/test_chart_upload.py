"""The weekly review post attaches its chart through Slack's external-upload API, when enabled."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.fakes import DEFAULT_BOT_SCOPES, FakeSlack
from bot.slack.notifier import SlackNotifier
from storage.db import Database

TOKEN = "xoxb-chart"
WEEKLY = [["2026-11-02", 12.0, 168.0], ["2026-11-09", 30.5, 168.0], ["2026-11-16", 4.0, 168.0]]


@pytest.fixture
async def db(tmp_path) -> AsyncIterator[Database]:  # type: ignore[no-untyped-def]
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/chart.db")
    await database.migrate()
    yield database
    await database.dispose()


async def _deliver(db: Database, scopes: list[str], attach: bool) -> FakeSlack:
    slack = FakeSlack(token=TOKEN, scopes=scopes)
    slack.add_channel("C0AUDIT", "jit-audit")
    async with slack:
        notifier = SlackNotifier(AsyncWebClient(token=TOKEN, base_url=slack.url), db, audit_channel="C0AUDIT")
        await notifier.deliver("report", {"text": "*Access review*", "weekly": WEEKLY, "attach_chart": attach})
    return slack


async def test_review_post_attaches_the_chart_as_a_png_in_its_thread(db: Database) -> None:
    slack = await _deliver(db, [*DEFAULT_BOT_SCOPES, "files:write"], attach=True)
    files = slack.files()
    assert len(files) == 1 and files[0].completed
    assert files[0].data is not None and files[0].data.startswith(b"\x89PNG\r\n\x1a\n")
    assert "C0AUDIT" in files[0].channels


async def test_without_files_write_the_review_is_posted_and_the_thread_says_why(db: Database) -> None:
    slack = await _deliver(db, list(DEFAULT_BOT_SCOPES), attach=True)
    assert slack.files() == [] or not any(f.completed for f in slack.files())
    texts = [m.text for m in slack.messages("C0AUDIT")]
    assert texts[0] == "*Access review*"
    assert any("files:write" in t for t in texts[1:])


async def test_chart_is_not_uploaded_unless_the_policy_asks(db: Database) -> None:
    slack = await _deliver(db, [*DEFAULT_BOT_SCOPES, "files:write"], attach=False)
    assert slack.files() == []
    assert slack.calls("files.getUploadURLExternal") == []
