"""The step-up in a real browser (Debian's chromium, headless, driven by Playwright; never a downloaded
browser): dave clicks Approve in (fake) Slack, opens the private link, confirms, signs in at the fake
OIDC provider with his password and one-time code, and lands on jitbot's "Approved" page; alice has
the access. A second visit of the link is refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright, expect

from bot.services.clock import ManualClock
from storage.db import Database
from tests.playground.test_browser import ARGS, ARTIFACTS, CHROMIUM, TIMEOUT_MS, _require_chromium
from tests.stepup.harness import StepUpEnv, step_up_env

pytestmark = pytest.mark.browser


@pytest.fixture
async def su(tmp_path: Path, clock: ManualClock) -> AsyncIterator[StepUpEnv]:
    clock.set(datetime.now(UTC))
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'jitbot.db'}")
    try:
        async with step_up_env(db, clock) as env:
            yield env
    finally:
        await db.dispose()


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    _require_chromium()
    expect.set_options(timeout=TIMEOUT_MS)
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            context = await browser.new_context(viewport={"width": 900, "height": 700})
            page = await context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            await browser.close()


async def test_an_approver_steps_up_in_the_browser(su: StepUpEnv, page: Page) -> None:
    await su.to_layer_two()
    link = await su.approve_click("U4DAVE")
    assert not await su.is_member()

    await page.goto(link)
    await expect(page.locator("#what")).to_contain_text("as dave@example.com")
    await page.locator("#continue").click()
    # the provider's sign-in page: the login hint filled in the email
    await expect(page.locator("h1")).to_have_text("Sign in")
    await expect(page.locator("#email")).to_have_value("dave@example.com")
    await page.locator("#password").fill("correct horse")
    await page.locator("#otp").fill("123456")
    await page.locator("#sign-in").click()
    await expect(page.locator("h1")).to_have_text("Approved")
    await page.screenshot(path=str(ARTIFACTS / "step-up-approved.png"))
    assert await su.is_member()
    cookies = await page.context.cookies()
    assert not [c for c in cookies if c["name"] == "jitbot_step_up"]  # the state cookie is gone

    await page.goto(link)  # used once already
    await expect(page.locator("#message")).to_contain_text("already been used")
