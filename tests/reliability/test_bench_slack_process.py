"""``bench.slack_tiers --slack-process``: the fake Slack in a process of its own answers the bench's
questions (progress, the final figures) as the in-process one does, for the same calls. Counts only."""

from __future__ import annotations

from slack_sdk.web.async_client import AsyncWebClient

from bench.slack_process import AUDIT, TOKEN, InProcessSlack, SlackProcess


async def _exchange(slack: InProcessSlack | SlackProcess) -> tuple[dict[str, int], dict[str, object]]:
    await slack.start()
    try:
        client = AsyncWebClient(token=TOKEN, base_url=slack.url)
        found = await client.users_lookupByEmail(email="user1@example.com")
        dm = await client.conversations_open(users=found["user"]["id"])
        await client.chat_postMessage(channel=dm["channel"]["id"], text="Your access has expired.")
        await client.chat_postMessage(channel=AUDIT, text="*R-M0000001* bulk for user1: expired")
        return await slack.progress(), await slack.report()
    finally:
        await slack.stop()


async def test_the_fake_slack_in_its_own_process_reports_what_the_in_process_one_does() -> None:
    inside = await _exchange(InProcessSlack(3, 20.0))
    apart = await _exchange(SlackProcess(3, 20.0))
    assert inside == apart
    progress, report = apart
    assert progress == {"calls": 4, "posts": 2, "lookups": 1}
    assert len(report["dms"]) == 1 and report["audited"] == {"R-M0000001": 1}  # type: ignore[arg-type]
