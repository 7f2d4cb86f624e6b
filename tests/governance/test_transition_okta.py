"""Transition against a real connector: the Okta SDK takes a bare group id or name, not ``group:<ref>``."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from bot.policy_file import parse_policy
from bot.services.clock import ManualClock
from bot.services.transition import TransitionService
from tests.conftest import POLICY, DbFactory
from tests.connectors.idp_fixtures import as_yaml, isolate_okta_sdk, okta_fake, okta_settings
from tests.services.stack import make_stack


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    isolate_okta_sdk(monkeypatch, tmp_path)


def _policy(okta_block: str) -> str:
    return (POLICY.replace("connectors:\n", "directory: demo\nconnectors:\n" + okta_block, 1)
            .replace("    connector: demo\n    target: {group: prod-admins}\n",
                     "    connector: okta\n    target: {group: prod-admins}\n")
            .replace("    require_ticket: true\n", "    require_ticket: true\n    transition:\n"
                     "      static_access_until: 2026-02-01\n"
                     "      keep_standing: {users: [carol@example.com]}\n"))


async def test_standing_members_removal_and_revert_work_on_okta(db_factory: DbFactory) -> None:
    async with okta_fake(page_size=2) as (fake, ca_file):
        erin, carol = fake.add_user("erin@example.com"), fake.add_user("carol@example.com")
        gid = fake.add_group("prod-admins", [erin, carol])
        fake.add_user("alice@example.com")
        clock = ManualClock(datetime(2026, 1, 20, tzinfo=UTC))
        s = await make_stack(db_factory(), parse_policy(_policy(as_yaml("okta", okta_settings(fake, ca_file))),
                                                        env={}), clock)
        try:
            service, elig = TransitionService(s.rt), s.rt.policy.eligibilities[0]
            assert elig.connector == "okta"
            standing = await service.standing_members(elig)
            assert sorted((x.user.email, x.kept) for x in standing) == [
                ("carol@example.com", True), ("erin@example.com", False)]

            clock.set(datetime(2026, 2, 1, 0, 1, tzinfo=UTC))
            await s.worker.run_until_idle()
            assert fake.members[gid] == [carol]  # erin removed at Okta, carol kept

            (shown,) = await service.revert("prod-admin", actor="ops", apply=False)
            assert shown.user_email == "erin@example.com" and fake.members[gid] == [carol]
            await service.revert("prod-admin", actor="ops", apply=True)
            assert sorted(fake.members[gid]) == sorted([carol, erin])
        finally:
            for conn in s.rt.connectors.values():
                await conn.aclose()
