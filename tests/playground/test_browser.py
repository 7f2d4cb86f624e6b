"""The playground in a real browser (Debian's chromium, headless, driven by Playwright).

Walks the whole loop as a person would: alice types /jit, fills the modal and submits; bob approves
layer 1, dave approves layer 2; alice has access; the clock jumps; the warning and then the expiry
appear. Every click travels from the page to the playground server, which sends it to the real bot
as a signed Slack request. Screenshots go to test-artifacts/; with JITBOT_UPDATE_SCREENSHOT=1 the README's
docs/img/playground.png is refreshed too (off by default, so a test run leaves the work tree clean).
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright, expect

from bot.playground.main import Running, start_playground
from bot.playground.stepup import OTP, PASSWORD
from connectors.base import IdpUser, Target, TargetKind

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("JITBOT_CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
README_SHOT = ROOT / "docs" / "img" / "playground.png"
ARTIFACTS = ROOT / "test-artifacts"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]
TIMEOUT_MS = 15_000


def _require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"chromium not found at {CHROMIUM}: install Debian's chromium (apt-get install -y chromium); "
                    "never `playwright install`. Set JITBOT_CHROMIUM to use another path.", pytrace=False)


@pytest.fixture
async def playground(tmp_path: Path) -> AsyncIterator[Running]:
    async with start_playground(0, database=f"sqlite+aiosqlite:///{tmp_path / 'playground.db'}") as running:
        yield running


@pytest.fixture
async def page(playground: Running) -> AsyncIterator[Page]:
    _require_chromium()
    expect.set_options(timeout=TIMEOUT_MS)
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 820})
            page = await context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(playground.url)
            yield page
            assert not errors, f"JavaScript errors on the page: {errors}"
        finally:
            await browser.close()


async def _as(page: Page, persona: str) -> None:
    await page.get_by_test_id("persona").select_option(persona)
    await expect(page.locator("body")).to_have_attribute("data-user", persona)


async def _jump(page: Page, button: str, shown: str) -> None:
    await page.get_by_test_id(button).click()
    await expect(page.get_by_test_id("now")).to_contain_text(f"(+{shown})")


async def test_request_two_approvals_grant_warning_expiry(page: Page, playground: Running) -> None:
    dm = page.get_by_test_id("dm")
    await expect(page.locator("body")).to_have_attribute("data-user", "U0ALICE")
    await expect(page.get_by_test_id("persona")).to_contain_text("Alice")

    # alice: /jit opens the modal; the ticket is required (an inline error from Slack's client)
    await page.get_by_test_id("composer").fill("/jit")
    await page.get_by_test_id("composer").press("Enter")
    modal = page.get_by_test_id("modal")
    await expect(modal).to_contain_text("Request access")
    await expect(modal.get_by_label("Access")).to_have_value("prod-admin")
    await modal.get_by_label("Why do you need it?").fill("Fix the failing <b>prod</b> deploy & <!channel>")
    await modal.get_by_role("button", name="Request").click()
    await expect(modal).to_contain_text("This field is required.")
    await modal.get_by_label("Ticket").fill("OPS-1234")
    await modal.get_by_role("button", name="Request").click()
    await expect(modal).to_have_count(0)
    await expect(dm).to_contain_text("is waiting for approval (layer 1 of 2)")

    # bob (layer 1) sees the request, rendered safely, and approves it
    await _as(page, "U0BOB")
    await expect(dm).to_contain_text("Access request R-")
    await expect(dm).to_contain_text("Fix the failing <b>prod</b> deploy & <!channel>")
    await expect(dm.locator("b", has_text="prod")).to_have_count(0)
    await expect(dm).to_contain_text("1 of 2")
    await page.screenshot(path=str(ARTIFACTS / "playground-1-bob-approves.png"))
    await dm.get_by_role("button", name="Approve").click()
    await expect(dm).to_contain_text("Approved")
    await expect(dm.get_by_role("button", name="Approve")).to_have_count(0)

    # dave (layer 2) approves: the layer needs step-up, so the answer is a link (only dave sees it) to sign
    # in again at the playground's OpenID Connect provider; the vote is recorded when he comes back
    await _as(page, "U0DAVE")
    await expect(dm).to_contain_text("2 of 2")
    await dm.get_by_role("button", name="Approve").click()
    link = dm.locator("a[href*='/step-up/']")
    await expect(link).to_have_count(1)
    href = await link.get_attribute("href")
    assert href and href.startswith(playground.playground.bot_url + "/step-up/")
    step_up = await page.context.new_page()
    await step_up.goto(href)
    await expect(step_up.locator("#what")).to_contain_text("(layer 2) as dave@example.com")
    await step_up.locator("#continue").click()
    await step_up.locator("#email").fill("dave@example.com")
    await step_up.locator("#password").fill(PASSWORD)
    await step_up.locator("#otp").fill(OTP)
    await step_up.screenshot(path=str(ARTIFACTS / "playground-1b-dave-steps-up.png"))
    await step_up.locator("#sign-in").click()
    await expect(step_up.locator("h1")).to_have_text("Approved")
    await step_up.close()
    await _as(page, "U0BOB")
    await _as(page, "U0DAVE")
    await expect(dm.get_by_role("button", name="Approve")).to_have_count(0)

    # alice has access
    await _as(page, "U0ALICE")
    await expect(dm).to_contain_text("You now have prod-admin")
    assert await _alice_is_prod_admin(playground)

    # the clock jumps: 50 minutes in, the 10-minute warning arrives with an Extend button
    for n in range(1, 6):
        await _jump(page, "clock-10m", f"{n * 10}m")
    await expect(dm).to_contain_text(re.compile(r"access ends in"))
    await expect(dm.get_by_role("button", name="Extend")).to_be_visible()
    await page.screenshot(path=str(README_SHOT if os.environ.get("JITBOT_UPDATE_SCREENSHOT") == "1"
                                   else ARTIFACTS / "playground.png"))
    await page.screenshot(path=str(ARTIFACTS / "playground-2-warning.png"))

    # an hour later it has expired and the membership is gone
    await _jump(page, "clock-1h", "1h50m")
    await expect(dm).to_contain_text("has expired")
    assert not await _alice_is_prod_admin(playground)

    # the audit channel has one thread telling the whole story
    await page.get_by_test_id("nav-audit").click()
    audit = page.get_by_test_id("audit")
    await expect(audit).to_contain_text("requests prod-admin")
    await audit.locator("summary").first.click()
    for word in ("approved at layer 1", "granted", "expiry warning", "expired"):
        await expect(audit).to_contain_text(word)
    await page.screenshot(path=str(ARTIFACTS / "playground-3-audit.png"))


async def _alice_is_prod_admin(playground: Running) -> bool:
    alice = IdpUser(id="alice@example.com", email="alice@example.com")
    return await playground.playground.rt.connectors["demo"].is_member(alice, Target(TargetKind.GROUP, "prod-admins"))


async def test_auto_approved_access_home_tab_and_confirmed_release(page: Page) -> None:
    dm = page.get_by_test_id("dm")
    # the App Home's Request button opens the modal; picking readonly re-renders it (no ticket field)
    await page.get_by_test_id("nav-home").click()
    home = page.get_by_test_id("home")
    await expect(home).to_contain_text("Your active access")
    await home.get_by_role("button", name="Request access").click()
    modal = page.get_by_test_id("modal")
    await expect(modal.get_by_label("Ticket")).to_have_count(1)
    await modal.get_by_label("Access").select_option("readonly")
    await expect(modal.get_by_label("Ticket")).to_have_count(0)
    await expect(modal).to_contain_text("approved automatically")
    await modal.get_by_label("Why do you need it?").fill("Look at the dashboards")
    await modal.get_by_role("button", name="Request").click()
    await expect(modal).to_have_count(0)

    await page.get_by_test_id("nav-dm").click()
    await expect(dm).to_contain_text("You now have readonly")
    # Release now carries a confirm dialog: "Keep it" changes nothing, "Release" ends the access
    release = dm.get_by_role("button", name="Release now").last
    await release.click()
    confirm = page.get_by_test_id("confirm")
    await expect(confirm).to_contain_text("Release access?")
    await confirm.get_by_role("button", name="Keep it").click()
    await expect(confirm).to_have_count(0)
    await release.click()
    await page.get_by_test_id("confirm").get_by_role("button", name="Release").click()
    await expect(dm).to_contain_text("Releasing R-")
    await expect(dm).to_contain_text("Only visible to you")
    await page.screenshot(path=str(ARTIFACTS / "playground-4-release.png"))
