"""A Slack environment whose prod-admin layer 2 needs step-up at a strict fake OIDC provider, and a
plain HTTP "browser" (aiohttp with a cookie jar) that walks a step-up link."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from html import unescape

import aiohttp

from bot.fakes.oidc_provider import FakeOidcProvider
from bot.policy_file import parse_policy
from bot.services.clock import ManualClock
from bot.slack import ids
from storage.db import Database
from tests.conftest import POLICY
from tests.slack.harness import AUDIT, Env, slack_env
from tests.slack.test_scenarios import _click, _request

CLIENT_ID, CLIENT_SECRET = "0oajitbot", "fake-client-secret-000000000000"
LINK = re.compile(r"<(http://127\.0\.0\.1:\d+/step-up/[A-Za-z0-9_-]{43})\|")


def step_up_policy(issuer: str, public_url: str, step_up: str = "{provider: corp, max_age: 5m, amr: [mfa]}") -> str:
    layer_two = "      - approvers: {groups: [security]}\n        timeout: 4h\n"
    text = POLICY.replace(layer_two, f"{layer_two}        step_up: {step_up}\n")
    assert "step_up" in text
    return text + (f"public_url: {public_url}\noidc_providers:\n  corp:\n    issuer: {issuer}\n"
                   f"    client_id: {CLIENT_ID}\n    client_secret: {CLIENT_SECRET}\n")


@dataclass
class StepUpEnv:
    env: Env
    idp: FakeOidcProvider
    base: str

    async def to_layer_two(self) -> None:
        """alice requests prod-admin, bob approves layer 1."""
        await _request(self.env)
        await _click(self.env, "U2BOB", ids.APPROVE)

    async def approve_click(self, user: str = "U4DAVE") -> str:
        """Click Approve; the link from the private answer."""
        before = len(self.env.slack.ephemerals(user))
        await _click(self.env, user, ids.APPROVE)
        answers = self.env.slack.ephemerals(user)[before:]
        assert answers, "no private answer to the click"
        found = LINK.search(answers[-1].text)
        assert found, answers[-1].text
        return found.group(1)

    async def is_member(self) -> bool:
        await self.env.settle()
        return await self.env.stack.is_member("alice@example.com", "prod-admins")


@asynccontextmanager
async def step_up_env(db: Database, clock: ManualClock, **policy: str) -> AsyncIterator[StepUpEnv]:
    idp = await FakeOidcProvider(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, redirect_uris=[],
                                 now=clock.now).start()
    for name in ("bob", "carol", "dave"):
        idp.add_user(f"{name}@example.com")
    try:
        async with slack_env(db, step_up_policy(idp.issuer, "http://127.0.0.1:1", **policy), clock) as env:
            base = env.sender.bot_url.removesuffix("/slack/events")
            # the bot's port is known now: the policy as it would be written for it
            text = step_up_policy(idp.issuer, base, **policy).replace('"#jit-audit"', AUDIT)
            env.stack.rt.loaded = parse_policy(text, source="test", env={})
            idp.redirect_uris = [f"{base}/step-up/callback"]
            yield StepUpEnv(env, idp, base)
    finally:
        await idp.stop()


class Browser:
    """Follows redirects, keeps cookies (also for 127.0.0.1), fills the fake provider's form."""

    def __init__(self) -> None:
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def close(self) -> None:
        await self.http.close()

    async def get(self, url: str) -> tuple[int, str]:
        async with self.http.get(url) as res:
            return res.status, await res.text()

    async def start(self, link: str) -> str:
        """Open the link, confirm; the provider's sign-in page."""
        status, page = await self.get(link)
        assert status == 200 and "Sign in and approve" in page, page
        async with self.http.post(link) as res:
            assert res.status == 200 and "Sign in" in (text := await res.text()), text
            self.form_url = str(res.url)
            return text

    async def sign_in(self, page: str, email: str, *, password: str = "correct horse", otp: str = "123456",
                      follow: bool = True) -> tuple[int, str]:
        """Submit the provider's form; (status, text) of the page the bot shows after its callback (or, with
        ``follow=False``, the provider's redirect: 302 and its Location)."""
        form_id = re.search(r"name='form' value='([^']+)'", page)
        assert form_id, page
        async with self.http.post(self.form_url, data={"form": form_id.group(1), "email": email,
                                                        "password": password, "otp": otp},
                                  allow_redirects=follow) as res:
            if not follow:
                return res.status, res.headers.get("Location", "")
            return res.status, unescape(await res.text())

    async def step_up(self, link: str, email: str, *, otp: str = "123456") -> tuple[int, str]:
        return await self.sign_in(await self.start(link), email, otp=otp)
