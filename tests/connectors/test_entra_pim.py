"""The Entra expiry backstop (connectors/entra_pim.py) against the fake Graph's PIM for Groups, which ends an
assignment itself when its clock passes the expiration."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from connectors.backstop import expiry_backstop
from connectors.base import ConfigError, ConnectorError, IdpUser, NotFound, Target, TargetKind, Usage
from connectors.entra import EntraConnector
from connectors.entra_pim import PIM_WRITE, EntraPimConnector
from connectors.registry import build_connector
from tests.connectors.test_entra import _settings, entra  # noqa: F401
from tests.fakes.idp.entra import DEFAULT_ROLES, FakeEntra

T0 = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def pim(entra: tuple[FakeEntra, str]) -> AsyncIterator[tuple[EntraPimConnector, FakeEntra, Clock]]:  # noqa: F811
    fake, ca_file = entra
    clock = Clock()
    fake.clock = clock
    fake.roles |= {PIM_WRITE}
    conn = build_connector("entra", _settings(fake, ca_file, "secret", expiry_backstop=True))
    assert isinstance(conn, EntraPimConnector)
    yield conn, fake, clock
    await conn.aclose()


def _alice(fake: FakeEntra) -> IdpUser:
    return IdpUser(id=fake.alice, email="alice@example.com")  # type: ignore[attr-defined]


def _target(fake: FakeEntra) -> Target:
    return Target(TargetKind.GROUP, fake.target)  # type: ignore[attr-defined]


async def test_the_backstop_is_opt_in(entra: tuple[FakeEntra, str]) -> None:  # noqa: F811
    fake, ca_file = entra
    plain = build_connector("entra", _settings(fake, ca_file, "secret"))
    assert type(plain) is EntraConnector and expiry_backstop(plain) is None
    await plain.aclose()
    with pytest.raises(ConfigError):
        from connectors.entra import from_settings
        from_settings("e", _settings(fake, ca_file, "secret", expiry_backstop=True))


async def test_grant_is_a_pim_assignment_that_entra_ends_at_its_expiry(
        pim: tuple[EntraPimConnector, FakeEntra, Clock]) -> None:
    conn, fake, clock = pim
    alice, target = _alice(fake), _target(fake)
    result = await conn.grant(alice, target, grant_id="g1", expires_at=T0 + timedelta(hours=1))
    assert result.added and fake.pim.assignments[(target.id, alice.id)] == T0 + timedelta(hours=1)
    assert fake.pim.requests[-1]["scheduleInfo"]["expiration"]["type"] == "afterDateTime"
    assert await conn.is_member(alice, target)
    clock.now = T0 + timedelta(hours=1)  # jitbot is down
    assert not await conn.is_member(alice, target)  # Entra ended it
    await conn.revoke(alice, target, grant_id="g1")  # jitbot back: nothing left to remove is success


async def test_extending_moves_the_expiration(pim: tuple[EntraPimConnector, FakeEntra, Clock]) -> None:
    conn, fake, clock = pim
    alice, target = _alice(fake), _target(fake)
    await conn.grant(alice, target, grant_id="g1", expires_at=T0 + timedelta(hours=1))
    await conn.move_expiry(alice, target, expires_at=T0 + timedelta(hours=3))
    assert fake.pim.requests[-1]["action"] == "adminUpdate"
    clock.now = T0 + timedelta(hours=2)
    assert await conn.is_member(alice, target)
    clock.now = T0 + timedelta(hours=3)
    assert not await conn.is_member(alice, target)
    with pytest.raises(NotFound):
        await conn.move_expiry(alice, target, expires_at=T0 + timedelta(hours=5))


async def test_revoke_removes_the_assignment(pim: tuple[EntraPimConnector, FakeEntra, Clock]) -> None:
    conn, fake, _ = pim
    alice, target = _alice(fake), _target(fake)
    await conn.grant(alice, target, grant_id="g1", expires_at=T0 + timedelta(hours=1))
    await conn.revoke(alice, target, grant_id="g1")
    assert fake.pim.assignments == {} and not await conn.is_member(alice, target)
    assert fake.pim.requests[-1]["action"] == "adminRemove"


async def test_standing_access_is_not_assigned(pim: tuple[EntraPimConnector, FakeEntra, Clock]) -> None:
    conn, fake, _ = pim
    alice, target = _alice(fake), _target(fake)
    fake.members[target.id].append(alice.id)  # a plain member before any grant
    result = await conn.grant(alice, target, grant_id="g1", expires_at=T0 + timedelta(hours=1))
    assert not result.added and fake.pim.assignments == {} and fake.pim.requests == []


async def test_without_the_permission_pim_is_refused(pim: tuple[EntraPimConnector, FakeEntra, Clock]) -> None:
    conn, fake, _ = pim
    fake.roles = set(DEFAULT_ROLES)  # PrivilegedAssignmentSchedule.* not consented
    conn._app = None  # a new token, with the roles of now  # noqa: SLF001
    with pytest.raises(ConnectorError):
        await conn.grant(_alice(fake), _target(fake), grant_id="g1", expires_at=T0 + timedelta(hours=1))
    checks = await conn.check(Usage(grants=("admin",)))
    assert [c.name for c in checks if not c.ok] == ["entra expiry backstop"]


async def test_check_reports_the_backstop_and_a_tenant_without_the_licence(
        pim: tuple[EntraPimConnector, FakeEntra, Clock]) -> None:
    conn, fake, _ = pim
    checks = await conn.check(Usage(grants=("admin",)))
    assert [c for c in checks if c.name == "entra expiry backstop"][0].ok
    fake.pim.licensed = False
    checks = await conn.check(Usage(grants=("admin",)))
    bad = [c for c in checks if not c.ok]
    assert [c.name for c in bad] == ["entra expiry backstop"] and "P2" in bad[0].message
