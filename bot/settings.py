"""Deployment settings: the only module that reads environment variables."""

from __future__ import annotations

import socket
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(Exception):
    """One clear line naming the setting that is missing or malformed."""


# Settings that may instead be read from a file named by ``<NAME>_FILE`` (a mounted Kubernetes or
# Docker secret): the file's content, without its trailing newline.
FILE_SETTINGS = ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "DATABASE_URL",
                 "JIRA_WEBHOOK_SECRET")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=True)

    @model_validator(mode="before")
    @classmethod
    def _from_files(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for name in FILE_SETTINGS:
            file = data.get(f"{name}_FILE")
            if not file:
                continue
            if data.get(name):
                raise ValueError(f"set {name} or {name}_FILE, not both")
            try:
                data[name] = Path(file).read_text().rstrip("\r\n")
            except OSError as exc:
                raise ValueError(f"{name}_FILE: cannot read {file}: {exc.strerror}") from None
        return data

    SLACK_BOT_TOKEN: SecretStr | None = None
    SLACK_SIGNING_SECRET: SecretStr | None = None
    SLACK_APP_TOKEN: SecretStr | None = None
    SLACK_BOT_TOKEN_FILE: str | None = None
    SLACK_SIGNING_SECRET_FILE: str | None = None
    SLACK_APP_TOKEN_FILE: str | None = None
    DATABASE_URL_FILE: str | None = None
    # The secret of the Jira admin webhook (bot/webhooks/jira.py): with it, ``serve`` answers
    # POST /jira/webhook; without it, that route does not exist.
    JIRA_WEBHOOK_SECRET: SecretStr | None = None
    JIRA_WEBHOOK_SECRET_FILE: str | None = None
    SLACK_API_URL: str = "https://slack.com/api/"
    JITBOT_POLICY: str = "policy.yml"
    DATABASE_URL: str = "sqlite+aiosqlite:///jitbot.db"
    PORT: int = Field(default=3000, ge=1, le=65535)
    # The address ``serve`` listens on: all interfaces by default (a container); 127.0.0.1 for a host
    # where a reverse proxy on the same machine is the only client.
    HOST: str = Field(default="0.0.0.0", min_length=1)
    JITBOT_LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    # "text": one human line per record; "json": one JSON object per line, tracebacks inside it.
    JITBOT_LOG_FORMAT: Literal["text", "json"] = "text"
    # Owner of this process's claims on due rows. It must survive a restart (a restarted process frees
    # its own claims at once), so the default is the host name, not host:pid; two processes on one
    # host must each set a distinct id.
    JITBOT_INSTANCE_ID: str = Field(default_factory=socket.gethostname, min_length=1, max_length=64,
                                    pattern=r"^[A-Za-z0-9._:@-]+$")

    # Seconds between two posts of the audit channel's lane (Slack takes about one message per second
    # per channel); lines that pile up meanwhile go out as one digest. 0 posts without pacing.
    JITBOT_AUDIT_CHANNEL_INTERVAL: float = Field(default=1.0, ge=0.0, le=60.0)

    # PostgreSQL: connections each process opens at most (as needed, then kept). replicas × this must
    # stay below the server's max_connections.
    JITBOT_DB_POOL_SIZE: int = Field(default=30, ge=1, le=500)

    # The garbage collector of serve and worker after start-up (bot/gc_tuning.py): tuned, or Python's default.
    JITBOT_GC: Literal["tuned", "default"] = "tuned"

    # The HTTP server's access log (logger aiohttp.access): "failures" logs requests answered 4xx / 5xx
    # (bad signatures, probes, errors), "all" every request (three per access request, at a cost:
    # ~40 µs each), "off" none.
    JITBOT_ACCESS_LOG: Literal["failures", "all", "off"] = "failures"

    # Delivered outbox messages (delivery bookkeeping, not the audit log) are deleted after this many
    # days, hourly, by the worker; 0 keeps them.
    JITBOT_OUTBOX_RETENTION_DAYS: int = Field(default=14, ge=0, le=3650)

    def outbox_retention(self) -> timedelta | None:
        return timedelta(days=self.JITBOT_OUTBOX_RETENTION_DAYS) if self.JITBOT_OUTBOX_RETENTION_DAYS else None

    @field_validator("JITBOT_LOG_LEVEL", mode="before")
    @classmethod
    def _level_case(cls, v: Any) -> Any:
        return v.strip().upper() if isinstance(v, str) else v

    @field_validator("JITBOT_LOG_FORMAT", mode="before")
    @classmethod
    def _format_case(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("SLACK_BOT_TOKEN")
    @classmethod
    def _bot_token(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value().startswith("xoxb-"):
            raise ValueError("must be a bot token starting with xoxb-")
        return v

    @field_validator("SLACK_APP_TOKEN")
    @classmethod
    def _app_token(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value().startswith("xapp-"):
            raise ValueError("must be an app-level token starting with xapp-")
        return v

    @field_validator("DATABASE_URL")
    @classmethod
    def _db(cls, v: str) -> str:
        if v.startswith(("postgresql://", "postgres://")):
            return "postgresql+asyncpg://" + v.split("://", 1)[1]
        if not v.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return v

    @field_validator("SLACK_API_URL")
    @classmethod
    def _api(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return v if v.endswith("/") else v + "/"

    def require_slack(self) -> None:
        """For ``serve``: Slack credentials must be present."""
        if self.SLACK_BOT_TOKEN is None:
            raise SettingsError("SLACK_BOT_TOKEN is not set (the bot token, xoxb-…)")
        if self.SLACK_SIGNING_SECRET is None and self.SLACK_APP_TOKEN is None:
            raise SettingsError("SLACK_SIGNING_SECRET is not set (needed for HTTP mode; "
                                "or set SLACK_APP_TOKEN for Socket Mode)")


def load_settings() -> Settings:
    """Read the environment; raise SettingsError with one line naming the bad setting."""
    try:
        return Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        raise SettingsError(f"{name}: {message}" if name else message) from None
