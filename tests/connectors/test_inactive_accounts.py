"""A suspended, deprovisioned or disabled account counts in no group: it is no requestor, approver,
delegate or admin, whatever groups the identity provider still lists it in (Okta and Entra through the
directory, on their strict fakes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.bootstrap import build_connectors
from bot.policy_file import LoadedPolicy, parse_policy
from bot.services.clock import ManualClock
from bot.services.directory import Directory
from tests.connectors.idp_fixtures import (
    as_yaml,
    entra_fake,
    entra_settings,
    isolate_okta_sdk,
    okta_fake,
    okta_settings,
)


def _policy(connector: str, leads: str, target: str) -> LoadedPolicy:
    return parse_policy(f"""
audit_channel: "#jit-audit"
admins: {{groups: [{leads}]}}
connectors:
{connector}
eligibilities:
  - name: prod
    connector: idp
    target: {{group: {target}}}
    requestors: {{groups: [{leads}]}}
    approvals: [{{approvers: {{groups: [{leads}]}}}}]
    max_duration: 1h
""", source="t.yml", env={})


async def _counts(loaded: LoadedPolicy, clock: ManualClock, email: str, leads: str) -> tuple[bool, bool]:
    directory = Directory(build_connectors(loaded, None), clock)
    elig = loaded.policy.eligibilities[0]
    try:
        as_approver = await directory.contains(loaded.policy, elig.approvals[0].approvers, email)
        listed = email in await directory.group_members(loaded.policy, leads)
        return as_approver, listed
    finally:
        for conn in directory.connectors.values():
            await conn.aclose()


@pytest.mark.parametrize("status", ["SUSPENDED", "DEPROVISIONED"])
async def test_an_inactive_okta_account_counts_in_no_group(
        clock: ManualClock, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, status: str) -> None:
    isolate_okta_sdk(monkeypatch, tmp_path)
    async with okta_fake(page_size=50) as (fake, ca_file):
        bob, carol = fake.add_user("bob@example.com"), fake.add_user("carol@example.com")
        leads = fake.add_group("leads", [bob, carol])
        target = fake.add_group("prod")
        loaded = _policy(as_yaml("idp", okta_settings(fake, ca_file)), leads, target)
        assert await _counts(loaded, clock, "bob@example.com", leads) == (True, True)
        fake.set_status(bob, status)
        assert await _counts(loaded, clock, "bob@example.com", leads) == (False, False)
        assert await _counts(loaded, clock, "carol@example.com", leads) == (True, True)


async def test_a_disabled_entra_account_counts_in_no_group(clock: ManualClock) -> None:
    async with entra_fake(page_size=50) as (fake, ca_file):
        bob, carol = fake.add_user("bob@example.com"), fake.add_user("carol@example.com")
        leads = fake.add_group("leads", [bob, carol])
        target = fake.add_group("prod")
        loaded = _policy(as_yaml("idp", entra_settings(fake, ca_file)), leads, target)
        assert await _counts(loaded, clock, "bob@example.com", leads) == (True, True)
        fake.set_enabled(bob, False)
        assert await _counts(loaded, clock, "bob@example.com", leads) == (False, False)
        assert await _counts(loaded, clock, "carol@example.com", leads) == (True, True)
