"""A webhook sink: each event POSTed as a CloudEvent, signed per the Standard Webhooks specification
(https://www.standardwebhooks.com, the ``standardwebhooks`` package): ``webhook-id`` (``evt_`` + the audit
event id, the same on every re-send, so receivers dedupe by it), ``webhook-timestamp`` (when this
attempt was signed) and ``webhook-signature`` (``v1,`` + base64 HMAC-SHA256 of id.timestamp.body)."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
from standardwebhooks import Webhook

from bot.domain.policy_sections import EventSink
from bot.events.cloudevent import body
from bot.services.outbox.delivery import RetryLater

CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"


def webhook_id(event_id: str) -> str:
    return f"evt_{event_id}"


class WebhookSink:
    """POSTs events to ``config.url``; any answer but 2xx, or no answer, is ``RetryLater``."""

    def __init__(self, config: EventSink, http: aiohttp.ClientSession, *,
                 wall: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        assert config.url is not None and config.secret is not None
        self.name, self.url = config.name, config.url
        self._signer = Webhook(config.secret.get_secret_value())
        self._http, self._timeout = http, aiohttp.ClientTimeout(total=config.timeout.total_seconds())
        # the receiver checks the timestamp against its own clock (5 minutes either way): the real time
        self._wall = wall
        self._ssl: ssl.SSLContext | None = ssl.create_default_context(cafile=config.ca_file) \
            if config.ca_file else None

    def headers(self, cloudevent: dict[str, Any], data: bytes) -> dict[str, str]:
        msg_id, now = webhook_id(cloudevent["id"]), self._wall()
        return {"webhook-id": msg_id, "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": self._signer.sign(msg_id, now, data), "content-type": CONTENT_TYPE}

    async def send(self, cloudevent: dict[str, Any]) -> None:
        data = body(cloudevent)
        try:
            async with self._http.post(self.url, data=data, headers=self.headers(cloudevent, data),
                                       timeout=self._timeout, ssl=self._ssl if self._ssl else True,
                                       allow_redirects=False) as response:
                if 200 <= response.status < 300:
                    return
                after = response.headers.get("Retry-After", "")
                raise RetryLater(f"{self.name}: HTTP {response.status}",
                                 after=float(after) if after.isdigit() else None)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise RetryLater(f"{self.name}: {type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        """The HTTP session belongs to the caller."""
