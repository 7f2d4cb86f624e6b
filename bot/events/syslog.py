"""A syslog sink: each event as an RFC 5424 message (its CloudEvent JSON as the message), sent over TLS
with RFC 5425's octet-counting framing (``MSG-LEN SP SYSLOG-MSG``) on one kept-open connection.

An RFC 5425 receiver sends nothing back: an event counts as taken once its bytes are written and
flushed to the connection (a receiver that dies with events in its socket buffer loses them: replay
from its last stored event). A connection the receiver closed is noticed and replaced before writing;
a broken one is ``RetryLater``: the stream sends again from the first event not yet taken, on a new
connection."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from datetime import UTC, datetime
from typing import Any

from bot.domain.policy_sections import EventSink
from bot.services.outbox.delivery import RetryLater

FACILITY_LOG_AUDIT = 13  # RFC 5424 table 1
SEVERITY_INFORMATIONAL = 6
PRI = FACILITY_LOG_AUDIT * 8 + SEVERITY_INFORMATIONAL
BOM = "\ufeff"  # RFC 5424 6.4: a UTF-8 MSG starts with the byte order mark


def _field(value: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, at most ``limit`` characters, ``-`` if empty."""
    clean = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return clean or "-"


def rfc5424(cloudevent: dict[str, Any], *, hostname: str, app_name: str = "jitbot") -> bytes:
    """The event as one RFC 5424 SYSLOG-MSG: ``<110>1 TIMESTAMP HOSTNAME jitbot - KIND - BOM{json}``."""
    at = datetime.fromisoformat(cloudevent["time"].replace("Z", "+00:00")).astimezone(UTC)
    stamp = at.isoformat(timespec="microseconds").replace("+00:00", "Z")
    msg_id = _field(str(cloudevent["data"].get("kind", "")), 32)
    text = json.dumps(cloudevent, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    header = f"<{PRI}>1 {stamp} {_field(hostname, 255)} {_field(app_name, 48)} - {msg_id} -"
    return f"{header} {BOM}{text}".encode()


def octet_counted(message: bytes) -> bytes:
    """RFC 5425 section 4.3 framing."""
    return str(len(message)).encode() + b" " + message


class SyslogSink:
    """Writes events to ``config.host:config.port``, over TLS unless the policy says ``tls: false``."""

    def __init__(self, config: EventSink, *, hostname: str | None = None) -> None:
        assert config.host is not None
        self.name, self.host, self.port = config.name, config.host, config.port
        self._timeout = config.timeout.total_seconds()
        self._hostname = hostname or socket.gethostname()
        self._ssl: ssl.SSLContext | None = None
        if config.tls:
            self._ssl = ssl.create_default_context(cafile=config.ca_file)  # verifies the server's name
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.StreamReader | None = None

    @property
    def peer_closed(self) -> bool:
        """Whether the receiver has closed the open connection (it is replaced before the next write)."""
        return self._reader is not None and self._reader.at_eof()

    async def _connection(self) -> asyncio.StreamWriter:
        # An RFC 5425 receiver never sends data: anything readable is its end of the connection. A
        # connection it closed is replaced before writing, rather than written into and lost.
        if self.peer_closed:
            await self.close()
        if self._writer is None or self._writer.is_closing():
            self._reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, ssl=self._ssl,
                                        server_hostname=self.host if self._ssl else None), self._timeout)
            self._writer = writer
            return writer
        return self._writer

    async def send(self, cloudevent: dict[str, Any]) -> None:
        frame = octet_counted(rfc5424(cloudevent, hostname=self._hostname))
        try:
            writer = await self._connection()
            writer.write(frame)
            await asyncio.wait_for(writer.drain(), self._timeout)
        except (TimeoutError, OSError, ssl.SSLError, ConnectionError) as exc:
            await self.close()
            raise RetryLater(f"{self.name}: {type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, ssl.SSLError, ConnectionError):
                pass
