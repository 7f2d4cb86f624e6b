"""Secrets mounted as files (Kubernetes, Docker): ``<NAME>_FILE`` for the settings and for the policy's
``${NAME}`` references; and the listening address."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.policy_file import PolicyError, parse_policy
from bot.settings import SettingsError, load_settings
from tests.conftest import POLICY


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "DATABASE_URL", "HOST"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"{name}_FILE", raising=False)


def test_a_setting_is_read_from_its_file_without_the_trailing_newline(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_text("xoxb-from-a-file\n")
    (tmp_path / "db").write_text("postgres://jit:pw@db:5432/jit\n")
    monkeypatch.setenv("SLACK_BOT_TOKEN_FILE", str(tmp_path / "token"))
    monkeypatch.setenv("DATABASE_URL_FILE", str(tmp_path / "db"))
    settings = load_settings()
    assert settings.SLACK_BOT_TOKEN is not None and settings.SLACK_BOT_TOKEN.get_secret_value() == "xoxb-from-a-file"
    assert settings.DATABASE_URL == "postgresql+asyncpg://jit:pw@db:5432/jit"  # validated like the variable


def test_a_missing_file_or_both_forms_are_refused_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN_FILE", str(tmp_path / "nope"))
    with pytest.raises(SettingsError, match=r"SLACK_BOT_TOKEN_FILE: cannot read .*nope"):
        load_settings()
    (tmp_path / "token").write_text("xoxb-a")
    monkeypatch.setenv("SLACK_BOT_TOKEN_FILE", str(tmp_path / "token"))
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-b")
    with pytest.raises(SettingsError, match="set SLACK_BOT_TOKEN or SLACK_BOT_TOKEN_FILE, not both"):
        load_settings()


def test_a_policy_reference_falls_back_to_its_file(tmp_path: Path) -> None:
    (tmp_path / "okta").write_text("00secret\n")
    text = POLICY.replace("audit_channel: \"#jit-audit\"", "audit_channel: \"#jit-${ENV}\"")
    loaded = parse_policy(text, env={"ENV_FILE": str(tmp_path / "okta")})
    assert loaded.policy.audit_channel == "#jit-00secret"
    with pytest.raises(PolicyError, match="ENV_FILE: cannot read"):
        parse_policy(text, env={"ENV_FILE": str(tmp_path / "missing")})


def test_host_is_all_interfaces_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().HOST == "0.0.0.0"
    monkeypatch.setenv("HOST", "127.0.0.1")
    assert load_settings().HOST == "127.0.0.1"
