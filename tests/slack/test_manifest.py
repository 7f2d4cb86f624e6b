"""Everything the code registers is in manifest.yml, and the manifest asks for nothing more."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from bot.slack import ids

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = yaml.safe_load((ROOT / "manifest.yml").read_text())
LISTENERS = "\n".join(p.read_text() for p in sorted((ROOT / "bot/slack").glob("*.py")))


def test_slash_command_matches() -> None:
    assert [c["command"] for c in MANIFEST["features"]["slash_commands"]] == [ids.COMMAND]


def test_events_match_registered_listeners() -> None:
    registered = set(re.findall(r'@app\.event\("([a-z_]+)"\)', LISTENERS))
    assert registered == set(MANIFEST["settings"]["event_subscriptions"]["bot_events"]) == set(ids.EVENTS)


def test_scopes_are_least_privilege() -> None:
    allowed = {"commands", "chat:write", "im:write", "users:read", "users:read.email",
               "channels:read", "groups:read"}  # is the bot a member of each approver channel
    assert set(MANIFEST["oauth_config"]["scopes"]["bot"]) <= allowed


def test_every_registered_action_and_view_is_documented_in_the_manifest() -> None:
    text = (ROOT / "manifest.yml").read_text()
    documented_actions = set(re.search(r"# action_ids: (.*)", text).group(1).split(", "))  # type: ignore[union-attr]
    documented_views = set(re.search(r"# callback_ids: (.*)", text).group(1).split(", "))  # type: ignore[union-attr]
    # plain ids and ids.matching(ids.X) (an id plus its numbered copies, e.g. several Approve buttons on Home)
    action_names = set(re.findall(r"@app\.action\((?:ids\.matching\()?ids\.([A-Z_]+)\)", LISTENERS))
    view_names = set(re.findall(r"@app\.view\(ids\.([A-Z_]+)\)", LISTENERS))
    assert {getattr(ids, n) for n in action_names} == documented_actions
    assert {getattr(ids, n) for n in view_names} == documented_views


def test_interactivity_and_home_tab_are_enabled() -> None:
    assert MANIFEST["settings"]["interactivity"]["is_enabled"] is True
    assert MANIFEST["features"]["app_home"]["home_tab_enabled"] is True
    urls = {MANIFEST["settings"]["interactivity"]["request_url"],
            MANIFEST["settings"]["event_subscriptions"]["request_url"],
            MANIFEST["features"]["slash_commands"][0]["url"]}
    assert all(u.endswith("/slack/events") for u in urls)
