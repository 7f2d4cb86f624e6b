"""The syslog sink: RFC 5424 messages over TLS with RFC 5425 octet counting, to a local TLS receiver
whose certificate comes from a throwaway CA (trustme); a dropped connection is reopened and the stream
goes on from the first event not taken."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import trustme

from bot.domain.policy_sections import EventSink
from bot.events.stream import EventStream
from bot.events.syslog import PRI, SyslogSink, octet_counted, rfc5424
from bot.services.clock import ManualClock
from tests.conftest import DbFactory
from tests.events.receivers import SyslogReceiver
from tests.events.test_webhook_stream import Ticks, write


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def receiver(ca: trustme.CA) -> AsyncIterator[SyslogReceiver]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    r = await SyslogReceiver(context).start()
    yield r
    await r.stop()


def syslog_sink(port: int, ca_file: Path) -> EventSink:
    return EventSink.model_validate({"name": "syslog", "type": "syslog", "host": "localhost", "port": port,
                                     "tls": True, "ca_file": str(ca_file), "timeout": "5s"})


def test_a_message_is_rfc5424_and_octet_counted() -> None:
    event = {"id": "7", "time": "2026-12-07T03:00:00.123456Z", "type": "dev.jitbot.access.granted",
             "data": {"kind": "granted", "detail": {"note": "ünïcode"}}}
    message = rfc5424(event, hostname="jit host")
    assert message.startswith(f"<{PRI}>1 2026-12-07T03:00:00.123456Z jithost jitbot - granted - ".encode())
    assert b"\xef\xbb\xbf{" in message  # BOM, then the JSON
    framed = octet_counted(message)
    length, _, rest = framed.partition(b" ")
    assert int(length) == len(rest) == len(message)


async def test_events_arrive_over_tls_in_order_and_survive_a_dropped_connection(
        db_factory: DbFactory, clock: ManualClock, receiver: SyslogReceiver, ca: trustme.CA,
        tmp_path: Path) -> None:
    db = db_factory()
    await db.migrate()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ticks = Ticks()
    async with aiohttp.ClientSession() as http:
        stream = EventStream(db, lambda: (syslog_sink(receiver.port, ca_file),), clock, http=http, owner="a",
                             monotonic=ticks)
        await stream.pass_once()
        await write(db, clock, ("R-1", "requested"), ("R-1", "granted"))
        assert await stream.pass_once() == 2
        await receiver.drop_connections()  # the receiver closes the connection: the sink opens a new one
        await write(db, clock, ("R-1", "revoked"))
        sink = stream.sinks()["syslog"]
        assert isinstance(sink, SyslogSink)
        for _ in range(1000):  # until the close has reached this side (a socket event)
            if sink.peer_closed:
                break
            await asyncio.sleep(0.001)
        assert sink.peer_closed
        assert await stream.pass_once() == 1
        await stream.close()
    events = receiver.events()
    kinds = [e["data"]["kind"] for e in events]
    assert kinds == ["requested", "granted", "revoked"]
    assert receiver.connections == 2
    assert all(e["header"].startswith(f"<{PRI}>1 ") for e in events)
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids)


async def test_a_receiver_with_an_untrusted_certificate_is_refused(
        db_factory: DbFactory, clock: ManualClock, receiver: SyslogReceiver, tmp_path: Path) -> None:
    db = db_factory()
    await db.migrate()
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    async with aiohttp.ClientSession() as http:
        stream = EventStream(db, lambda: (syslog_sink(receiver.port, other),), clock, http=http, owner="a",
                             monotonic=Ticks())
        await stream.pass_once()
        await write(db, clock, ("R-1", "requested"))
        assert await stream.pass_once() == 0
        await stream.close()
    assert receiver.messages == []
