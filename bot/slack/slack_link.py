"""What ``serve`` knows of its link to Slack, for ``/healthz`` and ``/metrics``: whether Slack accepts its
tokens, and in Socket Mode whether the WebSocket is up.

Nothing here holds up the start or stops the process. The worker revokes access whatever Slack says, so
a token Slack refuses (a typo, a revoked app) is said once, in one clear log line and in health as
``"refused: <Slack's error>"`` (status ``degraded``), instead of a crash loop that would stop
revocations too. In Socket Mode the connection is made in the background, so health, metrics and the
worker are up while Slack is unreachable; slack_sdk keeps retrying then. A refused app-level token is
not retried (it would log a traceback every 10 s forever)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)

# Slack's answers that mean the token itself is wrong: retrying cannot help.
REFUSALS = frozenset({"invalid_auth", "not_authed", "not_allowed_token_type", "token_revoked", "token_expired",
                      "account_inactive", "no_permission", "missing_scope"})


async def refusal(call: Any) -> str | None:
    """Slack's error code if ``call()`` was refused for its token; None if it worked or Slack could not
    be asked (network, 5xx, rate limit: those pass, and are retried where they matter)."""
    try:
        await call()
    except SlackApiError as exc:
        error = str(exc.response.get("error", ""))
        return error if error in REFUSALS else None
    except (TimeoutError, aiohttp.ClientError, OSError):
        return None
    except Exception:  # anything else is not Slack refusing the token: go on (and connect), but say it
        log.warning("could not ask Slack about a token", exc_info=True)
        return None
    return None


class SlackLink:
    """The bot token's standing with Slack and, with a Socket Mode handler, the WebSocket's."""

    def __init__(self, client: AsyncWebClient, handler: Any = None, app_token: str | None = None) -> None:
        self.client, self.handler, self.app_token = client, handler, app_token
        self.bot_refused: str | None = None
        self.socket_refused: str | None = None
        self._connecting: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Ask Slack about the tokens, then (Socket Mode) connect: in the background, never holding up
        the HTTP server or the worker."""
        self._connecting = asyncio.create_task(self._run())

    async def _run(self) -> None:
        self.bot_refused = await refusal(self.client.auth_test)
        if self.bot_refused:
            log.error("Slack refused SLACK_BOT_TOKEN (%s): no message can be sent until it is fixed; "
                      "grants and revocations go on", self.bot_refused)
        if self.handler is None or self.app_token is None:
            return
        app_token = self.app_token
        self.socket_refused = await refusal(lambda: self.client.apps_connections_open(app_token=app_token))
        if self.socket_refused:
            log.error("Slack refused SLACK_APP_TOKEN (%s): Socket Mode stays off until it is fixed (no request "
                      "reaches this process); grants and revocations go on", self.socket_refused)
            return
        await self.handler.connect_async()  # slack_sdk retries until it is connected
        log.info("connected to Slack in Socket Mode")

    async def socket_status(self) -> str:
        """``connected``, ``disconnected`` or ``refused: <error>`` (Socket Mode only)."""
        if self.socket_refused:
            return f"refused: {self.socket_refused}"
        connected = self.handler is not None and await self.handler.client.is_connected()
        return "connected" if connected else "disconnected"

    def health(self) -> dict[str, str]:
        return {"slack_bot_token": f"refused: {self.bot_refused}"} if self.bot_refused else {}

    async def close(self) -> None:
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        if self.handler is not None:
            with contextlib.suppress(Exception):
                await self.handler.close_async()
