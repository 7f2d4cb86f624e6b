"""Email notifications against a real SMTP server (aiosmtpd), and the Slack → email fallback."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.domain.policy_sections import Email
from bot.notify.fallback import FallbackNotifier
from bot.notify.mail import AUTH_RETRY_S, EmailNotifier
from bot.notify.render import render
from bot.policy_file import PolicyError, parse_policy
from bot.services.clock import ManualClock
from bot.services.outbox.dispatcher import (
    Delivery,
    OutboxDispatcher,
    PermanentFailure,
    RecordingNotifier,
    RetryLater,
    enqueue,
)
from storage.tables import OutboxMessage
from tests.conftest import POLICY, DbFactory
from tests.notify.smtp import PASSWORD, USER, free_port, smtp_server

SNAP: dict[str, Any] = {
    "id": "R-ABCD2345", "kind": "normal", "parent_id": None, "eligibility": "prod-admin",
    "description": "Production admin", "target": "group prod-admins", "requester": "alice@example.com",
    "requester_slack": None, "submitted_by": None, "submitted_by_slack": None, "starts_at": None,
    "duration_s": 3600, "justification": "fix the outage\nSubject: injected", "ticket": "OPS-1",
    "status": "pending", "layer": 1, "layers": 2, "created_at": "2025-01-06T10:00:00+00:00", "approvals": [],
    "expires_at": "2025-01-06T11:00:00+00:00", "granted_at": None,
}


def email_config(port: int, **extra: Any) -> Email:
    return Email.model_validate({"host": "127.0.0.1", "port": port, "starttls": False,
                                 "from": "jitbot@example.com", "timeout": "5s", **extra})


def test_render_person_kinds_and_not_channel_kinds() -> None:
    ask = render("approval_request", {"request": SNAP, "layer": 1, "approver": "Bob@Example.com", "note": "Reminder"})
    assert ask is not None and ask.to == "bob@example.com"
    assert ask.subject == "[jitbot] Approval needed: R-ABCD2345 prod-admin for alice@example.com"
    assert "Reminder" in ask.body and "Layer:         1 of 2" in ask.body and "Home tab" in ask.body
    notice = render("requester", {"request": {**SNAP, "status": "active"}, "event": "warning",
                                  "text": "Your access ends\nsoon"})
    assert notice is not None and notice.to == "alice@example.com"
    assert "\n" not in notice.subject and "/jit release R-ABCD2345" in notice.body
    review = render("review_request", {"request": SNAP, "reviewer": "carol@example.com"})
    assert review is not None and "break-glass" in review.body
    transition = render("transition_notice", {"email": "erin@example.com", "eligibility": "prod-admin",
                                              "text": "Standing access ends on 2025-02-01."})
    assert transition is not None and transition.to == "erin@example.com"
    for kind in ("audit", "alert", "report", "approval_update", "review_update"):
        assert render(kind, {"request": SNAP, "text": "x", "outcome": "Approved", "layer": 1}) is None


async def test_email_is_sent_as_plain_text() -> None:
    with smtp_server() as server:
        await EmailNotifier(email_config(server.port)).deliver(
            "approval_request", {"request": SNAP, "layer": 1, "approver": "bob@example.com"})
    [(sender, rcpts, msg)] = server.inbox.messages
    assert sender == "jitbot@example.com" and rcpts == ["bob@example.com"]
    assert msg["To"] == "bob@example.com" and msg["Subject"].startswith("[jitbot] Approval needed: R-ABCD2345")
    assert msg.get_content_type() == "text/plain" and msg["Message-ID"] and msg["Auto-Submitted"]
    payload = msg.get_payload(decode=True)
    assert isinstance(payload, bytes)
    body = payload.decode()
    assert "fix the outage" in body and "OPS-1" in body
    assert msg["Subject"].count("injected") == 0  # user text never reaches a header


async def test_starttls_and_auth(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with smtp_server(tmp_path, tls_auth=True) as server:
        good = email_config(server.port, starttls=True, username=USER, password=PASSWORD, ca_file=server.ca_file)
        await EmailNotifier(good).deliver("requester", {"request": SNAP, "event": "submitted", "text": "Submitted"})
        assert server.inbox.logins == [USER] and len(server.inbox.messages) == 1
        plain = email_config(server.port, ca_file=server.ca_file)  # no STARTTLS, no AUTH: the server refuses
        with pytest.raises(RetryLater):
            await EmailNotifier(plain).deliver("requester", {"request": SNAP, "event": "submitted", "text": "x"})
        bad = email_config(server.port, starttls=True, username=USER, password="wrong-Pa55word",
                           ca_file=server.ca_file)
        with pytest.raises(RetryLater) as exc:
            await EmailNotifier(bad).deliver("requester", {"request": SNAP, "event": "submitted", "text": "x"})
        assert exc.value.after == AUTH_RETRY_S
        untrusted = email_config(server.port, starttls=True, username=USER, password=PASSWORD)  # system CAs only
        with pytest.raises(RetryLater):
            await EmailNotifier(untrusted).deliver("requester", {"request": SNAP, "event": "submitted", "text": "x"})
    assert len(server.inbox.messages) == 1
    assert PASSWORD not in caplog.text and "wrong-Pa55word" not in caplog.text
    assert PASSWORD not in repr(good) and PASSWORD not in str(good.model_dump(mode="json"))


async def test_refused_recipient_is_permanent_deferred_is_retried() -> None:
    with smtp_server() as server:
        notifier = EmailNotifier(email_config(server.port))
        payload = {"request": SNAP, "event": "submitted", "text": "x"}
        server.inbox.refuse_rcpt = "550 5.1.1 no such user"
        with pytest.raises(PermanentFailure):
            await notifier.deliver("requester", payload)
        server.inbox.refuse_rcpt = "451 4.3.0 try again later"
        with pytest.raises(RetryLater):
            await notifier.deliver("requester", payload)
    with pytest.raises(PermanentFailure):
        await notifier.deliver("audit", {"request": SNAP, "text": "x"})


async def test_server_down_keeps_the_message_until_it_is_back(db_factory: DbFactory, clock: ManualClock) -> None:
    db = db_factory()
    await db.migrate()
    port = free_port()
    dispatcher = OutboxDispatcher(db, EmailNotifier(email_config(port)), clock)
    async with db.transaction() as session:
        enqueue(session, at=clock.now(), order_key=SNAP["id"], kind="requester",
                payload={"request": SNAP, "event": "submitted", "text": "Your request was submitted"})
    assert await dispatcher.dispatch_once() == 0  # nobody listening: connection refused
    async with db.sessions() as session:
        row = (await session.execute(select(OutboxMessage))).scalar_one()
    assert row.status == "pending" and row.attempts == 1 and "unreachable" in (row.last_error or "")
    with smtp_server(port=port) as server:
        clock.advance(timedelta(minutes=2))
        assert await dispatcher.dispatch_once() == 1
    assert [m["To"] for _, _, m in server.inbox.messages] == ["alice@example.com"]


class RefusingSlack:
    """Slack that knows nobody: every DM is a permanent failure; channel posts succeed."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def deliver(self, kind: str, payload: dict[str, Any]) -> Delivery:
        self.calls.append(kind)
        if kind in ("requester", "approval_request", "approval_update"):
            raise PermanentFailure("slack error users_not_found")
        return Delivery()


def _policy(port: int, notify: str = "") -> Any:
    text = POLICY + f"""
email:
  host: 127.0.0.1
  port: {port}
  starttls: false
  from: jitbot@example.com
  username: jitbot
  password: ${{SMTP_PASSWORD}}
{notify}"""
    return parse_policy(text, env={"SMTP_PASSWORD": PASSWORD}).policy


async def test_fallback_emails_what_slack_refuses() -> None:
    with smtp_server() as server:
        policy = _policy(server.port).model_copy(update={"email": email_config(server.port)})
        slack = RefusingSlack()
        notifier = FallbackNotifier(slack, lambda: policy)
        await notifier.deliver("requester", {"request": SNAP, "event": "submitted", "text": "Submitted"})
        await notifier.deliver("audit", {"request": SNAP, "event": "submitted", "actor": "x", "text": "t"})
        with pytest.raises(PermanentFailure):  # no email form: the Slack failure stands
            await notifier.deliver("approval_update", {"request": SNAP, "layer": 1, "outcome": "Approved"})
    assert slack.calls == ["requester", "audit", "approval_update"]
    assert [m["To"] for _, _, m in server.inbox.messages] == ["alice@example.com"]


async def test_preference_skips_slack_and_no_email_config_passes_through() -> None:
    with smtp_server() as server:
        policy = _policy(server.port, "notify: {email: [Bob@example.com], email_fallback: false}")
        policy = policy.model_copy(update={"email": email_config(server.port)})
        slack = RefusingSlack()
        notifier = FallbackNotifier(slack, lambda: policy)
        await notifier.deliver("approval_request", {"request": SNAP, "layer": 1, "approver": "bob@example.com"})
        with pytest.raises(PermanentFailure):  # fallback switched off
            await notifier.deliver("approval_request", {"request": SNAP, "layer": 1, "approver": "carol@example.com"})
    assert slack.calls == ["approval_request"]
    assert [m["To"] for _, _, m in server.inbox.messages] == ["bob@example.com"]
    bare = parse_policy(POLICY, env={}).policy
    recording = RecordingNotifier()
    await FallbackNotifier(recording, lambda: bare).deliver("requester", {"request": SNAP, "event": "x", "text": "y"})
    assert recording.of_kind("requester")


def test_policy_keys_validate_and_hide_the_password() -> None:
    policy = _policy(2525)
    assert policy.email is not None and policy.email.from_ == "jitbot@example.com"
    assert policy.email.password is not None and policy.email.password.get_secret_value() == PASSWORD
    assert PASSWORD not in str(policy.model_dump(mode="json"))
    with pytest.raises(PolicyError, match="notify.email needs the email"):
        parse_policy(POLICY + "notify: {email: [bob@example.com]}\n", env={})
    with pytest.raises(PolicyError, match="username and email.password go together"):
        parse_policy(POLICY + "email: {host: h, from: a@b.c, username: u}\n", env={})
