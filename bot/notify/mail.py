"""Email notifications by SMTP (aiosmtplib): the plain-text forms of person-addressed outbox messages.

Failures map onto the outbox contract: a refused recipient or message (5xx) is a ``PermanentFailure``;
everything else (server down or refusing connections, 4xx, timeouts, TLS or authentication problems, which
an operator can fix) is ``RetryLater``, so the message waits in the outbox and is not lost. The password is
never logged: log lines and errors name the server and the SMTP reply only.
"""

from __future__ import annotations

import logging
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import aiosmtplib

from bot.domain.policy_sections import Email
from bot.notify.render import Mail, render
from bot.services.outbox.dispatcher import Delivery, PermanentFailure, RetryLater

log = logging.getLogger(__name__)

AUTH_RETRY_S = 300.0  # wrong credentials need a human: do not hammer the server meanwhile


class EmailNotifier:
    def __init__(self, config: Email) -> None:
        self.config = config
        self._tls: ssl.SSLContext | None = (ssl.create_default_context(cafile=config.ca_file)
                                            if config.ca_file else None)

    async def deliver(self, kind: str, payload: dict[str, Any]) -> Delivery:
        mail = render(kind, payload)
        if mail is None:
            raise PermanentFailure(f"{kind} messages have no email form")
        await self.send(mail)
        return Delivery()

    def message(self, mail: Mail) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.config.from_
        msg["To"] = mail.to
        msg["Subject"] = mail.subject
        msg["Date"] = formatdate(localtime=False, usegmt=True)
        msg["Message-ID"] = make_msgid(domain=self.config.from_.rsplit("@", 1)[-1])
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(mail.body)
        return msg

    async def send(self, mail: Mail) -> None:
        cfg = self.config
        server = f"{cfg.host}:{cfg.port}"
        try:
            await aiosmtplib.send(
                self.message(mail), hostname=cfg.host, port=cfg.port, use_tls=cfg.tls,
                start_tls=cfg.starttls,
                username=cfg.username, password=cfg.password.get_secret_value() if cfg.password else None,
                timeout=cfg.timeout.total_seconds(), tls_context=self._tls)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            if codes and all(500 <= c < 600 for c in codes):
                raise PermanentFailure(f"smtp {server} refused recipient {mail.to}: {codes}") from None
            raise RetryLater(f"smtp {server} deferred recipient {mail.to}: {codes}") from None
        except aiosmtplib.SMTPAuthenticationError as exc:
            log.error("smtp %s rejected the configured username/password (%s)", server, exc.code)
            raise RetryLater(f"smtp {server} authentication failed ({exc.code})", after=AUTH_RETRY_S) from None
        except (aiosmtplib.SMTPRecipientRefused, aiosmtplib.SMTPDataError) as exc:
            if 500 <= exc.code < 600:
                raise PermanentFailure(f"smtp {server} refused the message to {mail.to}: "
                                       f"{exc.code} {exc.message[:200]}") from None
            raise RetryLater(f"smtp {server} deferred the message: {exc.code} {exc.message[:200]}") from None
        except aiosmtplib.SMTPResponseException as exc:
            raise RetryLater(f"smtp {server} said {exc.code} {exc.message[:200]}") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise RetryLater(f"smtp {server} unreachable: {type(exc).__name__}") from None
        log.info("emailed %s: %s", mail.to, mail.subject)
