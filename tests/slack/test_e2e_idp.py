"""The end-to-end Slack scenario with a real identity-provider connector behind the eligibility.

/jit → modal → two approval layers in DMs → grant → expiry → revoke, through the real Bolt app and
the strict fake Slack, with requestors and approvers resolved by the memory directory and the access
itself granted by the Okta connector (real ``okta`` SDK) or the Entra connector (real ``msal`` +
Graph) against their strict fakes over TLS. The fake IdP is the truth: the membership appears after
the last approval and is gone after expiry, with exactly one add and one remove call.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

import pytest

from bot.services.auditing.audit import verify_chain
from bot.services.clock import ManualClock
from bot.slack import ids
from tests.conftest import POLICY, DbFactory
from tests.connectors.idp_fixtures import (
    as_yaml,
    entra_fake,
    entra_settings,
    isolate_okta_sdk,
    okta_fake,
    okta_settings,
)
from tests.slack.harness import AUDIT, Env, slack_env
from tests.slack.test_scenarios import _click, _request


@dataclass
class Idp:
    """One fake provider as the test sees it."""

    connector_yaml: str
    requests: list[tuple[str, str]]
    is_member: Callable[[], bool]  # alice in the target group, read from the fake's own state
    add: re.Pattern[str]  # method + path of an add-member call
    remove: re.Pattern[str]

    def count(self, pattern: re.Pattern[str]) -> int:
        return sum(1 for method, path in self.requests if pattern.fullmatch(f"{method} {path}"))


@asynccontextmanager
async def _okta() -> AsyncIterator[Idp]:
    async with okta_fake(page_size=2) as (fake, ca_file):
        alice = fake.add_user("alice@example.com", "Alice", "Adams")
        others = [fake.add_user(f"{n}@example.com") for n in ("bob", "carol", "dave", "erin")]
        gid = fake.add_group("prod-admins", others[3:])  # erin holds it standing
        yield Idp(as_yaml("okta", okta_settings(fake, ca_file)), fake.requests,
                  lambda: alice in fake.members[gid],
                  re.compile(rf"PUT /api/v1/groups/{gid}/users/{alice}"),
                  re.compile(rf"DELETE /api/v1/groups/{gid}/users/{alice}"))


@asynccontextmanager
async def _entra() -> AsyncIterator[Idp]:
    async with entra_fake(page_size=2) as (fake, ca_file):
        alice = fake.add_user("alice@example.com", "Alice Adams")
        others = [fake.add_user(f"{n}@example.com") for n in ("bob", "carol", "dave", "erin")]
        gid = fake.add_group("prod-admins", others[3:])
        yield Idp(as_yaml("entra", entra_settings(fake, ca_file)), fake.requests,
                  lambda: alice in fake.members[gid],
                  re.compile(rf"POST /v1.0/groups/{gid}/members/\$ref"),
                  re.compile(rf"DELETE /v1.0/groups/{gid}/members/{alice}/\$ref"))


PROVIDERS = {"okta": _okta, "entra": _entra}


@pytest.fixture(params=sorted(PROVIDERS))
async def idp(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
              tmp_path: os.PathLike[str]) -> AsyncIterator[tuple[str, Idp]]:
    isolate_okta_sdk(monkeypatch, tmp_path)
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):  # the connector's own ca_file must be what works
        monkeypatch.delenv(name, raising=False)
    async with PROVIDERS[request.param]() as fake:
        yield request.param, fake


def _policy(connector: str, connector_yaml: str) -> str:
    # The memory connector stays the directory (requestor and approver groups); the eligibility grants
    # through the real connector.
    return (POLICY.replace("connectors:\n", "directory: demo\nconnectors:\n" + connector_yaml, 1)
            .replace("    connector: demo\n    target: {group: prod-admins}\n",
                     f"    connector: {connector}\n    target: {{group: prod-admins}}\n"))


async def _close(env: Env) -> None:
    for conn in env.stack.rt.connectors.values():
        await conn.aclose()


async def test_request_approvals_grant_expiry_and_revoke_at_the_identity_provider(
        db_factory: DbFactory, clock: ManualClock, idp: tuple[str, Idp]) -> None:
    name, fake = idp
    async with slack_env(db_factory(), _policy(name, fake.connector_yaml), clock) as env:
        try:
            assert env.stack.rt.policy.eligibility("prod-admin").connector == name  # type: ignore[union-attr]
            await _request(env)
            await _click(env, "U2BOB", ids.APPROVE)
            assert not fake.is_member() and fake.count(fake.add) == 0  # one layer is not enough
            await _click(env, "U4DAVE", ids.APPROVE)
            assert fake.is_member(), f"alice is not in prod-admins at the fake {name}"
            assert any("You now have prod-admin" in t for t in env.dms("U1ALICE"))

            env.clock.advance(timedelta(minutes=46))  # the expiry warning, no extension
            await env.settle()
            assert fake.is_member() and any("ends in" in t for t in env.dms("U1ALICE"))
            env.clock.advance(timedelta(minutes=15))
            await env.settle()
            assert not fake.is_member(), f"alice is still in prod-admins at the fake {name}"
            assert any("has expired" in t for t in env.dms("U1ALICE"))
            await env.settle()  # nothing more is due: no second revoke
            assert (fake.count(fake.add), fake.count(fake.remove)) == (1, 1), fake.requests

            roots = env.slack.messages(AUDIT, include_replies=False)
            texts = " ".join(m.text for m in env.slack.thread(AUDIT, roots[0].ts))
            for word in ("requested", "approved at layer 1", "granted", "expired"):
                assert word in texts
            assert (await verify_chain(env.stack.rt.db)).ok
        finally:
            await _close(env)
