"""A real SMTP server for tests (aiosmtpd on 127.0.0.1, a free port), optionally STARTTLS + AUTH."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

USER, PASSWORD = "jitbot", "s3cret-smtp-pa55"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Inbox:
    messages: list[tuple[str, list[str], Message]] = field(default_factory=list)
    refuse_rcpt: str | None = None  # e.g. "550 5.1.1 no such user" or "451 4.3.0 try later"
    logins: list[str] = field(default_factory=list)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if self.refuse_rcpt:
            return self.refuse_rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 Message accepted for delivery"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == USER
              and auth_data.password.decode() == PASSWORD)
        if ok:
            self.logins.append(USER)
        return AuthResult(success=ok, handled=False)


@dataclass
class SmtpServer:
    port: int
    inbox: Inbox
    ca_file: str | None = None


@contextmanager
def smtp_server(tmp_path: Path | None = None, *, tls_auth: bool = False,
                port: int | None = None) -> Iterator[SmtpServer]:
    """Plain SMTP, or (``tls_auth``) STARTTLS required before AUTH, AUTH required before mail."""
    inbox = Inbox()
    port = port or free_port()
    kwargs: dict[str, Any] = {}
    ca_file = None
    if tls_auth:
        assert tmp_path is not None
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        ca_path = tmp_path / "smtp-ca.pem"
        ca.cert_pem.write_to_path(str(ca_path))
        ca_file = str(ca_path)
        kwargs = {"tls_context": ctx, "require_starttls": True, "auth_required": True,
                  "authenticator": inbox.authenticate}
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield SmtpServer(port, inbox, ca_file)
    finally:
        controller.stop()
