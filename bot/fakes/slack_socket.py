"""Slack's side of Socket Mode on the fake Slack, as https://api.slack.com/apis/socket-mode describes it.

``apps.connections.open``, called with the app-level token (``xapp-…``; a bot token is
``not_allowed_token_type``), answers a WebSocket URL on the fake carrying a one-time ticket. The app
connects there and is greeted with ``hello``. Every interaction then arrives as an envelope —
``{"envelope_id", "type": "slash_commands" | "interactive" | "events_api", "payload",
"accepts_response_payload"}`` — which the app acknowledges on the same socket with
``{"envelope_id"[, "payload"]}``; an envelope not acknowledged within 3 s is what Slack shows the person
as a timeout. ``refresh`` sends ``disconnect`` (``refresh_requested``), after which a well-behaved app
opens a new connection. WebSocket pings are answered with pongs (the SDK checks them).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

from aiohttp import WSMsgType, web

ACK_DEADLINE_S = 3.0
TICKET_LIFETIME_S = 30.0
# Envelopes whose acknowledgement may carry a payload (the answer): commands, modal submissions, options.
ANSWERED = {"slash_commands", "view_submission", "block_suggestion"}


class SocketModeRefused(Exception):
    """``apps.connections.open`` refused: ``error`` is Slack's error code."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


class SocketMode:
    """The fake's Socket Mode endpoint for one app-level token."""

    def __init__(self, app_token: str, app_id: str) -> None:
        if not app_token.startswith("xapp-"):
            raise ValueError("an app-level token starts with xapp-")
        self.app_token, self.app_id = app_token, app_id
        self._tickets: dict[str, float] = {}
        self._sockets: list[web.WebSocketResponse] = []
        self._turn = 0
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._connected = asyncio.Event()
        self.ack_deadline = ACK_DEADLINE_S
        self.opened = 0  # connections opened (hello sent)
        self.stray_acks: list[Any] = []  # acknowledgements of no envelope in flight (late, or made up)

    @property
    def connections(self) -> int:
        return len(self._sockets)

    def open(self, token: str | None, root_url: str) -> dict[str, Any]:
        """``apps.connections.open``: the URL to connect to (the ticket is good once, for 30 s)."""
        if not token:
            raise SocketModeRefused("not_authed")
        if not token.startswith("xapp-"):
            raise SocketModeRefused("not_allowed_token_type")
        if token != self.app_token:
            raise SocketModeRefused("invalid_auth")
        ticket = secrets.token_hex(12)
        self._tickets[ticket] = time.monotonic()
        return {"url": f"{root_url.replace('http://', 'ws://', 1)}link/?ticket={ticket}&app_id={self.app_id}"}

    async def serve(self, request: web.Request) -> web.StreamResponse:
        """The WebSocket the app connects to."""
        issued = self._tickets.pop(request.query.get("ticket", ""), None)
        if issued is None or time.monotonic() - issued > TICKET_LIFETIME_S:
            return web.Response(status=401, text="invalid or used ticket")
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        self._sockets.append(socket)
        self.opened += 1
        await socket.send_json({"type": "hello", "num_connections": len(self._sockets),
                                "debug_info": {"host": "applink-fake", "approximate_connection_time": 18060},
                                "connection_info": {"app_id": self.app_id}})
        self._connected.set()
        try:
            async for message in socket:
                if message.type == WSMsgType.TEXT:
                    self._acknowledged(message.data)
        finally:
            self._sockets.remove(socket)
            if not self._sockets:
                self._connected.clear()
        return socket

    def _acknowledged(self, data: str) -> None:
        try:
            ack = json.loads(data)
        except ValueError:
            self.stray_acks.append(data)
            return
        waiting = self._acks.pop(ack.get("envelope_id", ""), None) if isinstance(ack, dict) else None
        if waiting is None or waiting.done():
            self.stray_acks.append(ack)
        else:
            waiting.set_result(ack)

    async def deliver(self, kind: str, payload: dict[str, Any], *,
                      connect_timeout: float = 10.0) -> tuple[dict[str, Any] | None, float]:
        """Send one envelope (on the connections in turn) and wait for its acknowledgement: (the ack's
        payload if the envelope accepts one, else None; seconds taken). ``TimeoutError`` after
        ``ack_deadline`` (Slack's 3 s)."""
        async with asyncio.timeout(connect_timeout):
            await self._connected.wait()
        socket = self._sockets[self._turn % len(self._sockets)]
        self._turn += 1
        envelope_id = secrets.token_hex(16)
        answered = kind == "slash_commands" or (kind == "interactive" and payload.get("type") in ANSWERED)
        waiting: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._acks[envelope_id] = waiting
        started = time.monotonic()
        envelope = {"envelope_id": envelope_id, "type": kind, "payload": payload,
                    "accepts_response_payload": answered}
        if kind == "events_api":
            envelope.update(retry_attempt=0, retry_reason="")
        await socket.send_str(json.dumps(envelope))
        try:
            async with asyncio.timeout(self.ack_deadline):
                ack = await waiting
        finally:
            self._acks.pop(envelope_id, None)
        body = ack.get("payload") if answered else None  # Slack ignores a payload it did not ask for
        return (body if isinstance(body, dict) else None), time.monotonic() - started

    async def refresh(self) -> None:
        """Ask every connected app to reconnect (``disconnect``, reason ``refresh_requested``)."""
        for socket in list(self._sockets):
            await socket.send_json({"type": "disconnect", "reason": "refresh_requested",
                                    "debug_info": {"host": "applink-fake"}})

    async def close(self) -> None:
        for socket in list(self._sockets):
            await socket.close()
