"""Step-up-verified approvals end to end (fake Slack, the bot's /step-up pages, a strict fake OIDC
provider): the vote is recorded only after a fresh MFA sign-in as the approver who clicked; every
failure is a clear message and changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from html import unescape
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import col

from bot.domain.requests import Decision, PolicyViolation
from bot.domain.step_up_proof import StepUpRequired
from bot.services.clock import ManualClock
from bot.slack import ids
from storage.tables import AccessRequest, ApprovalVote, Event, StepUpLink
from tests.conftest import DbFactory
from tests.slack.test_scenarios import _click
from tests.stepup.harness import Browser, StepUpEnv, step_up_env


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    b = Browser()
    yield b
    await b.close()


@pytest.fixture
async def su(db_factory: DbFactory, clock: ManualClock) -> AsyncIterator[StepUpEnv]:
    clock.set(datetime.now(UTC))  # ID tokens carry this time; the library's own checks use the clock given
    async with step_up_env(db_factory(), clock) as env:
        yield env


async def votes(su: StepUpEnv) -> list[tuple[int, str]]:
    async with su.env.stack.rt.db.sessions() as session:
        rows = (await session.execute(select(ApprovalVote))).scalars().all()
    return sorted((v.layer, v.approver) for v in rows)


async def links(su: StepUpEnv) -> list[str]:
    async with su.env.stack.rt.db.sessions() as session:
        return [row.status for row in (await session.execute(select(StepUpLink))).scalars().all()]


async def test_a_fresh_mfa_sign_in_as_the_approver_records_the_approval(su: StepUpEnv, browser: Browser) -> None:
    await su.to_layer_two()
    link = await su.approve_click()
    assert await votes(su) == [(1, "bob@example.com")]  # the click alone recorded nothing
    assert not await su.is_member()
    status, page = await browser.step_up(link, "dave@example.com")
    assert status == 200 and "Approved" in page, page
    assert await votes(su) == [(1, "bob@example.com"), (2, "dave@example.com")]
    assert await su.is_member()
    async with su.env.stack.rt.db.sessions() as session:
        kinds = [e.kind for e in (await session.execute(select(Event).order_by(Event.id))).scalars().all()]  # type: ignore[arg-type]
    assert "step_up_verified" in kinds
    assert kinds.index("step_up_verified") < len(kinds) - 1  # written with the vote, before the grant
    status, page = await browser.get(link)  # single use
    assert status == 400 and "already been used" in page
    assert await links(su) == ["used"]
    assert su.idp.calls["token"] == 1


async def test_signing_in_as_someone_else_approves_nothing(su: StepUpEnv, browser: Browser) -> None:
    await su.to_layer_two()
    link = await su.approve_click("U4DAVE")
    status, page = await browser.step_up(link, "carol@example.com")  # carol is a layer-2 approver too
    assert status == 400 and "You signed in as carol@example.com, but the approval was clicked by dave" in page
    assert await votes(su) == [(1, "bob@example.com")] and not await su.is_member()
    assert await links(su) == ["failed"]
    status, page = await Browser().step_up(await su.approve_click("U4DAVE"), "dave@example.com")
    assert status == 200 and "Approved" in page  # a new click, a new link


async def test_a_sign_in_without_mfa_approves_nothing(su: StepUpEnv, browser: Browser) -> None:
    await su.to_layer_two()
    status, page = await browser.step_up(await su.approve_click(), "dave@example.com", otp="")
    assert status == 400 and "did not use mfa" in page
    assert await votes(su) == [(1, "bob@example.com")] and not await su.is_member()


async def test_an_expired_link_approves_nothing(su: StepUpEnv, browser: Browser) -> None:
    await su.to_layer_two()
    link = await su.approve_click()
    su.env.clock.advance(timedelta(minutes=6))
    status, page = await browser.get(link)
    assert status == 400 and "expired" in page
    assert su.idp.calls["authorize"] == 0 and await votes(su) == [(1, "bob@example.com")]


async def test_a_link_expiring_during_the_sign_in_approves_nothing(su: StepUpEnv, browser: Browser) -> None:
    await su.to_layer_two()
    page = await browser.start(await su.approve_click())
    su.env.clock.advance(timedelta(minutes=6))
    status, text = await browser.sign_in(page, "dave@example.com")
    assert status == 400 and "expired" in text and await votes(su) == [(1, "bob@example.com")]


async def test_a_callback_in_another_browser_approves_nothing(su: StepUpEnv, browser: Browser) -> None:
    await su.to_layer_two()
    page = await browser.start(await su.approve_click())
    status, callback = await browser.sign_in(page, "dave@example.com", follow=False)
    assert status == 302 and "/step-up/callback?" in callback
    other = Browser()
    try:
        status, text = await other.get(callback)
    finally:
        await other.close()
    assert status == 400 and "another browser" in text
    assert await votes(su) == [(1, "bob@example.com")]
    status, text = await browser.get(callback)  # nothing was used up by the stranger: the right browser goes on
    assert status == 200 and "Approved" in text
    status, text = await browser.get(callback)  # and only once
    assert status == 400 and "already used" in text


async def test_a_key_rotation_after_the_keys_were_cached_fetches_them_once_more(
        su: StepUpEnv, browser: Browser) -> None:
    await su.to_layer_two()
    status, _ = await browser.step_up(await su.approve_click(), "dave@example.com", otp="")
    assert status == 400 and su.idp.calls["jwks"] == 1  # verified (then refused: no mfa); keys cached
    su.idp.rotate(drop_old=True)
    status, page = await Browser().step_up(await su.approve_click(), "dave@example.com")
    assert status == 200 and "Approved" in page, page
    assert su.idp.calls["jwks"] == 2  # once more, for the new key id
    assert await su.is_member()


HOSTILE: dict[str, dict[str, Any]] = {
    "another audience": {"aud": "someone-else"},
    "another issuer": {"iss": "https://evil.example"},
    "a replayed nonce": {"nonce": "not-the-one-sent"},
    "no nonce": {"nonce": None},
    "expired": {"exp": 1_000_000_000},
    "no auth_time": {"auth_time": None},
    "an old sign-in": {"auth_time": 1_000_000_000},
    "several audiences, no azp": {"aud": ["0oajitbot", "other"]},
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_a_token_that_does_not_verify_approves_nothing(su: StepUpEnv, browser: Browser, case: str) -> None:
    await su.to_layer_two()
    su.idp.claim_overrides = HOSTILE[case]
    status, page = await browser.step_up(await su.approve_click(), "dave@example.com")
    assert status == 400 and "Not approved" in page, page
    assert await votes(su) == [(1, "bob@example.com")] and not await su.is_member()
    assert await links(su) == ["failed"]


async def test_a_token_signed_with_an_unpublished_key_approves_nothing(su: StepUpEnv, browser: Browser) -> None:
    await su.to_layer_two()
    su.idp.sign_with_unlisted_key = True
    status, page = await browser.step_up(await su.approve_click(), "dave@example.com")
    assert status == 400 and "could not be verified" in page
    assert await votes(su) == [(1, "bob@example.com")]


async def test_a_provider_that_reuses_an_earlier_sign_in_approves_nothing(su: StepUpEnv, browser: Browser) -> None:
    await su.to_layer_two()
    su.idp.reuse_session_from = su.env.clock.now() - timedelta(minutes=3)  # within max_age, before the click
    link = await su.approve_click()
    await browser.get(link)
    async with browser.http.post(link) as res:  # the provider answers at once, without asking
        text = unescape(await res.text())
    assert res.status == 400 and "reused an earlier sign-in" in text, text
    assert await votes(su) == [(1, "bob@example.com")]


async def test_deny_needs_no_step_up_and_a_non_approver_gets_no_link(su: StepUpEnv) -> None:
    await su.to_layer_two()
    await _click(su.env, "U4DAVE", ids.DENY)  # opens the reason modal; the vote itself is not stepped up
    assert su.env.slack.modal_stack("U4DAVE")
    with pytest.raises(PolicyViolation) as caught:
        await su.env.stack.approvals.decide(request_id=await _request_id(su), layer=2, approver="erin@example.com",
                                            decision=Decision.APPROVE)
    assert not isinstance(caught.value, StepUpRequired)  # not an approver: refused as ever, no link
    with pytest.raises(StepUpRequired):
        await su.env.stack.approvals.decide(request_id=await _request_id(su), layer=2, approver="dave@example.com",
                                            decision=Decision.APPROVE)
    await su.env.stack.approvals.decide(request_id=await _request_id(su), layer=2, approver="dave@example.com",
                                        decision=Decision.DENY, reason="no")
    assert (2, "dave@example.com") in await votes(su)


async def _request_id(su: StepUpEnv) -> str:
    async with su.env.stack.rt.db.sessions() as session:
        return str((await session.execute(select(col(AccessRequest.id)))).scalar_one())
