"""The Slack Web API client of every process (the bot, the CLI's notifier)."""

from __future__ import annotations

import logging

import aiohttp
from slack_sdk.web.async_client import AsyncWebClient

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


def web_client(token: str, base_url: str, session: aiohttp.ClientSession | None) -> AsyncWebClient:
    """One client per process. Give it one aiohttp session (keep-alive connections) for every call:
    without it slack_sdk opens a new session, and a new connection, per call."""
    return AsyncWebClient(token=token, base_url=base_url, session=session, logger=api_logger())
