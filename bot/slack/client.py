"""The Slack Web API client of every process (the bot, the CLI's notifier), and replies to a request's
response_url over the same HTTP session."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from ssl import SSLContext
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_bolt.context.respond.internals import _build_message
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient
from slack_sdk.webhook.webhook_response import WebhookResponse

# the logger slack_sdk's AsyncWebClient uses when given none
API_LOGGER = "slack_sdk.web.async_base_client"


def api_logger() -> logging.Logger:
    """slack_sdk's client logger with its level set on it, not inherited.

    slack_sdk builds its debug lines — every call's arguments, a whole modal or message included, and
    every response body — whenever its logger's *own* level is NOTSET or DEBUG (``logger.level <=
    DEBUG``), and only then hands them to ``logger.debug``, which drops them. A NOTSET logger (the
    default) paid for that on every call. Set to the level it inherits now (the process configures
    logging before building its client), debug output still appears when logging is at DEBUG."""
    logger = logging.getLogger(API_LOGGER)
    if logger.level == logging.NOTSET:
        logger.setLevel(logger.getEffectiveLevel())
    return logger


class WebClient(AsyncWebClient):
    """slack_sdk's client; ``chat.postMessage`` and ``chat.update`` with blocks that are plain dicts (all
    of jitbot's are) skip slack_sdk's conversion of Block objects, whose nested function is redefined —
    its ``Union[…]`` annotation of seven classes evaluated by ``typing`` — on every call (~0.1 ms a
    flow). Same request otherwise: arguments that are None are left out, as slack_sdk leaves them out."""

    async def _plain(self, method: str, kwargs: dict[str, Any]) -> Any:
        return await self.api_call(method, json={k: v for k, v in kwargs.items() if v is not None})

    @staticmethod
    def _plain_blocks(kwargs: dict[str, Any]) -> bool:
        blocks = kwargs.get("blocks")
        return ((blocks is None or (isinstance(blocks, list) and all(isinstance(b, dict) for b in blocks)))
                and not {"attachments", "metadata", "file_ids", "user_auth_blocks"} & kwargs.keys()
                and bool(kwargs.get("text")))

    async def chat_postMessage(self, **kwargs: Any) -> Any:
        if self._plain_blocks(kwargs):
            return await self._plain("chat.postMessage", kwargs)
        return await super().chat_postMessage(**kwargs)

    async def chat_update(self, **kwargs: Any) -> Any:
        if self._plain_blocks(kwargs):
            return await self._plain("chat.update", kwargs)
        return await super().chat_update(**kwargs)


def web_client(token: str, base_url: str, session: aiohttp.ClientSession | None) -> AsyncWebClient:
    """One client per process. Give it one aiohttp session (keep-alive connections) for every call:
    without it slack_sdk opens a new session, and a new connection, per call."""
    return WebClient(token=token, base_url=base_url, session=session, logger=api_logger())


class PooledRespond(AsyncRespond):
    """Bolt's ``respond()`` over the app's one aiohttp session. Bolt's own opens a new session — a new
    TCP and TLS connection to Slack — for every reply (an approver's "You approved …", every ``/jit``
    answer). Same message, proxy and TLS settings, same errors: ``ValueError`` where the request has no
    response_url."""

    def __init__(self, *, response_url: str | None, session: aiohttp.ClientSession, proxy: str | None = None,
                 ssl: SSLContext | None = None) -> None:
        super().__init__(response_url=response_url, proxy=proxy, ssl=ssl)
        self.session = session

    async def __call__(self, text: str | dict[str, Any] = "", **fields: Any) -> WebhookResponse:  # type: ignore[override]
        if self.response_url is None:
            raise ValueError("respond is unsupported here as there is no response_url")
        message = _build_message(text=text, **fields) if isinstance(text, str) else _build_message(**text)
        webhook = AsyncWebhookClient(url=self.response_url, session=self.session, proxy=self.proxy, ssl=self.ssl)
        return await webhook.send_dict(message)


def pooled_respond(app: AsyncApp, session: aiohttp.ClientSession) -> None:
    """Give every listener a ``respond`` that replies over ``session`` (a global Bolt middleware)."""

    @app.middleware
    async def _respond_over_the_session(context: AsyncBoltContext, next: Callable[[], Awaitable[None]]) -> None:
        context["respond"] = PooledRespond(response_url=context.response_url, session=session,
                                           proxy=context.client.proxy, ssl=context.client.ssl)
        await next()
