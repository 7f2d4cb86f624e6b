"""Local receivers for the event stream tests: a Standard Webhooks endpoint that verifies every request
with the ``standardwebhooks`` library's own verifier and dedupes by ``webhook-id`` (as the spec asks of
receivers), and an RFC 5425 syslog-over-TLS server (octet-counted frames)."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # base64 of 24 bytes (the spec's example length)


@dataclass
class WebhookReceiver:
    secret: str = SECRET
    up: bool = True
    status_when_down: int = 503
    calls: int = 0  # requests that reached the receiver, whatever it answered
    fail_calls: set[int] = field(default_factory=set)  # these calls (1-based) answer 500
    refused: list[str] = field(default_factory=list)  # why a request failed verification
    events: list[dict[str, Any]] = field(default_factory=list)  # accepted, first delivery of each id
    duplicates: list[str] = field(default_factory=list)  # webhook-ids seen again (dropped)
    _seen: set[str] = field(default_factory=set)
    runner: web.AppRunner | None = None
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        if not self.up:
            return web.Response(status=self.status_when_down)
        if self.calls in self.fail_calls:
            return web.Response(status=500)
        data = await request.read()
        try:
            payload = Webhook(self.secret).verify(data, dict(request.headers))
        except WebhookVerificationError as exc:
            self.refused.append(str(exc))
            return web.Response(status=401)
        msg_id = request.headers["webhook-id"]
        if msg_id in self._seen:
            self.duplicates.append(msg_id)
        else:
            self._seen.add(msg_id)
            self.events.append({"headers": dict(request.headers), "event": payload})
        return web.Response(status=204)

    async def start(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_post("/siem", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/siem"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def ids(self) -> list[int]:
        return [int(e["event"]["id"]) for e in self.events]


FRAME = re.compile(rb"(\d+) ")


@dataclass
class SyslogReceiver:
    """RFC 5425: TLS, each message ``MSG-LEN SP SYSLOG-MSG``."""

    ssl_context: ssl.SSLContext
    messages: list[bytes] = field(default_factory=list)
    connections: int = 0
    server: asyncio.Server | None = None
    port: int = 0
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        try:
            while True:
                length = await reader.readuntil(b" ")
                assert FRAME.fullmatch(length), length
                self.messages.append(await reader.readexactly(int(length[:-1])))
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def start(self) -> SyslogReceiver:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def drop_connections(self) -> None:
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def stop(self) -> None:
        await self.drop_connections()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def events(self) -> list[dict[str, Any]]:
        out = []
        for msg in self.messages:
            header, _, rest = msg.partition(b" \xef\xbb\xbf")  # the BOM before a UTF-8 MSG
            out.append({"header": header.decode(), **json.loads(rest)})
        return out
