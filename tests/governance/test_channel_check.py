"""``policy check --live``, Slack's part: the bot is a member of every approver channel (strict fake Slack)."""

from __future__ import annotations

from pathlib import Path

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.cli import main
from bot.fakes import FakeSlack
from bot.governance.channel_check import channel_problems
from bot.policy_file import parse_policy
from tests.conftest import POLICY

LAYER1 = "      - approvers: {groups: [leads]}\n"


def _policy(*channels: str) -> str:
    """Layer 1 of prod-admin in the first channel; readonly gets one layer per further channel."""
    text = POLICY.replace(LAYER1, f"      - approvers: {{groups: [leads], channel: \"{channels[0]}\"}}\n", 1)
    extra = "".join(f"      - approvers: {{groups: [leads], channel: \"{c}\", notify: both}}\n"
                    for c in channels[1:])
    return text.replace("    warn_before: 10m\n", "    warn_before: 10m\n    approvals:\n" + extra) if extra else text


async def test_each_channel_the_bot_cannot_post_in_is_named() -> None:
    slack = FakeSlack(token="xoxb-t")
    slack.add_channel("C0GOODONE", "prod-approvals")
    slack.add_channel("C0OUTSIDE", "sec-approvals", bot_is_member=False)
    slack.add_channel("C0ARCHIVE", "old-approvals").is_archived = True
    slack.add_channel("G0SECRET1", "secret", is_private=True, bot_is_member=False)
    async with slack:
        client = AsyncWebClient(token="xoxb-t", base_url=slack.url)
        good = parse_policy(_policy("C0GOODONE", "#prod-approvals"), source="p", env={}).policy
        assert await channel_problems(good, client) == []
        bad = parse_policy(_policy("C0OUTSIDE", "#sec-approvals", "C0ARCHIVE", "C0MISSING"),
                           source="p", env={}).policy
        problems = await channel_problems(bad, client)
        problems += await channel_problems(parse_policy(_policy("#secret"), source="p", env={}).policy, client)
    assert len(problems) == 5, problems
    assert "prod-admin: approvals[1]: the bot is not a member of Slack channel C0OUTSIDE" in problems[0]
    assert "the bot is not a member of Slack channel #sec-approvals" in problems[1]
    assert "C0ARCHIVE is archived" in problems[2]
    assert "C0MISSING does not exist" in problems[3]
    assert "#secret does not exist (or is private and the bot is not in it)" in problems[4]


async def test_without_the_read_scopes_the_check_says_which_scope() -> None:
    slack = FakeSlack(token="xoxb-t", scopes=("chat:write", "im:write"))
    slack.add_channel("C0GOODONE", "prod-approvals")
    async with slack:
        client = AsyncWebClient(token="xoxb-t", base_url=slack.url)
        policy = parse_policy(_policy("C0GOODONE"), source="p", env={}).policy
        [problem] = await channel_problems(policy, client)
    assert "channels:read" in problem


def test_the_live_check_needs_the_bot_token_for_approver_channels(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    path = tmp_path / "policy.yml"
    path.write_text(_policy("C0GOODONE"))
    assert main(["policy", "check", str(path), "--live"]) == 1
    assert "SLACK_BOT_TOKEN is not set, so the approver channels (C0GOODONE) cannot be checked" in \
        capsys.readouterr().err
