"""When the request form cannot open in time, the person gets a message with a button — never silence.

The directory is the strict fake Okta (requestor groups are read there before ``views.open``). Slack's
trigger_id dies 3 s after the command; a slow or failing IdP must not leave ``/jit`` unanswered.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from bot.services.clock import ManualClock
from bot.slack import ids, modal_open
from tests.conftest import POLICY, DbFactory
from tests.connectors.idp_fixtures import as_yaml, isolate_okta_sdk, okta_fake, okta_settings
from tests.fakes.idp.okta import FakeOkta
from tests.slack.harness import Env, slack_env

PEOPLE = ("alice", "bob", "carol", "dave", "erin", "root")
GROUPS = {"engineers": ("alice", "bob", "erin"), "leads": ("bob", "carol"), "security": ("dave", "carol"),
          "prod-admins": ("erin",), "readonly": ()}


@pytest.fixture
async def okta(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> AsyncIterator[tuple[FakeOkta, str]]:
    isolate_okta_sdk(monkeypatch, tmp_path)
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    async with okta_fake(page_size=50) as (fake, ca_file):
        uid = {p: fake.add_user(f"{p}@example.com") for p in PEOPLE}
        for group, members in GROUPS.items():
            fake.add_group(group, [uid[m] for m in members])
        yield fake, as_yaml("okta", okta_settings(fake, ca_file))


def _policy(connector_yaml: str) -> str:
    return POLICY.replace("connectors:\n", "directory: okta\nconnectors:\n" + connector_yaml, 1)


@asynccontextmanager
async def _closing(env: Env) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for conn in env.stack.rt.connectors.values():
            await conn.aclose()


def _offer(env: Env, user: str) -> list[str]:
    """The action ids of the buttons in ``user``'s ephemeral messages."""
    return [e["action_id"] for m in env.slack.ephemerals(user) for b in m.blocks if b.get("type") == "actions"
            for e in b["elements"]]


async def test_an_idp_that_fails_gets_a_button_that_opens_the_form_once_it_is_back(
        db_factory: DbFactory, clock: ManualClock, okta: tuple[FakeOkta, str]) -> None:
    fake, connector_yaml = okta
    async with slack_env(db_factory(), _policy(connector_yaml), clock) as env, _closing(env):
        fake.break_credentials()  # every Okta call now answers 401
        res = await env.sender.command("U1ALICE", "")
        assert res.status == 200
        assert env.slack.modal_stack("U1ALICE") == []
        (offer,) = [m for m in env.slack.ephemerals("U1ALICE") if m.blocks]
        assert modal_open.IDP_FAILED in offer.text and _offer(env, "U1ALICE") == [ids.OPEN_REQUEST]

        fake._credentials_broken = False  # the IdP is back  # noqa: SLF001
        res = await env.sender.click("U1ALICE", offer.channel, offer.message_ts, ids.OPEN_REQUEST)
        assert res.status == 200
        (modal,) = env.slack.modal_stack("U1ALICE")
        assert modal.body["callback_id"] == ids.REQUEST_VIEW


async def test_an_idp_slower_than_the_trigger_gets_a_button_and_the_retry_is_served_from_the_cache(
        db_factory: DbFactory, clock: ManualClock, okta: tuple[FakeOkta, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake, connector_yaml = okta
    monkeypatch.setattr(modal_open, "BUILD_DEADLINE", 0.2)
    async with slack_env(db_factory(), _policy(connector_yaml), clock) as env, _closing(env):
        fake.slow_next(0.6)  # the first directory call outlasts the deadline
        await env.sender.command("U1ALICE", "")
        assert env.slack.modal_stack("U1ALICE") == []
        (offer,) = [m for m in env.slack.ephemerals("U1ALICE") if m.blocks]
        assert modal_open.SLOW in offer.text
        for _ in range(100):  # the slow read finishes in the background (0.6 s at the fake)
            if not env.stack.rt.directory._inflight:  # noqa: SLF001
                break
            await asyncio.sleep(0.05)
        calls = fake.api_calls
        res = await env.sender.click("U1ALICE", offer.channel, offer.message_ts, ids.OPEN_REQUEST)
        assert res.status == 200 and len(env.slack.modal_stack("U1ALICE")) == 1
        # the slow lookup went on in the background and was kept: what is left is the person's groups and, once
        # per process, the policy's group names (Okta ids by name)
        assert fake.api_calls - calls <= 5, fake.requests[calls:]
