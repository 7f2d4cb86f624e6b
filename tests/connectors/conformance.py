"""One conformance suite, run against every connector.

A provider's test module defines a ``harness`` fixture returning a ``Harness`` (its connector talking
to its fake provider on 127.0.0.1) and then does ``from tests.connectors.conformance import *``
to collect the suite (``# noqa: F403``).

Where the provider publishes a machine-readable API description (vendored under tests/specs/), its
fake checks every request the connector sends and every answer it gives against it and keeps what
departs in ``spec_violations``; ``published_spec_holds`` fails every test with a harness on any.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

import pytest

from connectors.base import (
    Check,
    Connector,
    IdpUser,
    PermissionDenied,
    RateLimited,
    Target,
    Transient,
)
from connectors.resilience import ResilientConnector


class FaultControls(Protocol):
    """Switches on the fake provider."""

    def rate_limit_next(self, retry_after: float, count: int = 1) -> None:
        """The next ``count`` API calls answer 429 with the provider's retry header(s)."""

    def fail_next(self, status: int = 503, count: int = 1) -> None:
        """The next ``count`` API calls answer with ``status`` (5xx) and the documented error body."""

    def forbid_next(self, count: int = 1) -> None:
        """The next ``count`` API calls answer 403 with the documented error body."""

    def break_credentials(self) -> None:
        """From now on the fake rejects our credentials (token endpoint and/or API)."""

    def is_member(self, target: Target, user_id: str) -> bool:
        """The truth at the fake, independent of the connector."""

    @property
    def api_calls(self) -> int:
        """How many API calls (excluding token-endpoint calls) the fake has served."""


@dataclass
class Harness:
    connector: Connector
    controls: FaultControls
    existing_email: str
    unknown_email: str
    target: Target  # exists at the fake; ``existing_email`` is not in it yet
    paged_group: str  # a group (or role ref) with more members than one page of the fake
    paged_group_size: int
    # Builds a second connector for the same fake with deliberately wrong credentials.
    bad_credentials: Callable[[], Awaitable[Connector]] | None = None
    extra: dict[str, object] = field(default_factory=dict)


EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def published_spec_holds(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test that talks to a fake through the harness: no exchange departed from the spec."""
    if "harness" not in request.fixturenames:
        yield
        return
    harness: Harness = request.getfixturevalue("harness")  # set up first, so torn down after this check
    yield
    violations = getattr(harness.controls, "spec_violations", None)
    if violations:
        pytest.fail("exchanges that depart from the published API description:\n" + "\n".join(violations))


class RecordingSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []
        self.now = 0.0

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.now += seconds

    def monotonic(self) -> float:
        return self.now


def resilient(connector: Connector, sleep: RecordingSleep, attempts: int = 4) -> ResilientConnector:
    return ResilientConnector(connector, sleep=sleep, monotonic=sleep.monotonic, jitter=lambda: 1.0,
                              max_attempts=attempts, base_delay=0.25)


async def _user(h: Harness) -> IdpUser:
    user = await h.connector.find_user(h.existing_email)
    assert user is not None
    return user


async def test_conformance_find_user_returns_the_user(harness: Harness) -> None:
    user = await _user(harness)
    assert user.email.lower() == harness.existing_email.lower()
    assert user.id


async def test_conformance_find_user_is_case_insensitive(harness: Harness) -> None:
    user = await harness.connector.find_user(harness.existing_email.upper())
    assert user is not None and user.email.lower() == harness.existing_email.lower()


async def test_conformance_unknown_user_is_none(harness: Harness) -> None:
    assert await harness.connector.find_user(harness.unknown_email) is None


async def test_conformance_grant_adds_membership_and_reports_it(harness: Harness) -> None:
    user = await _user(harness)
    assert not harness.controls.is_member(harness.target, user.id)
    result = await harness.connector.grant(user, harness.target, grant_id="g1", expires_at=EXPIRES)
    assert result.added is True
    assert harness.controls.is_member(harness.target, user.id)
    assert await harness.connector.is_member(user, harness.target)


async def test_conformance_grant_again_is_success_and_not_added(harness: Harness) -> None:
    user = await _user(harness)
    await harness.connector.grant(user, harness.target, grant_id="g1", expires_at=EXPIRES)
    again = await harness.connector.grant(user, harness.target, grant_id="g2", expires_at=EXPIRES)
    assert again.added is False
    assert harness.controls.is_member(harness.target, user.id)


async def test_conformance_revoke_removes_and_revoke_again_is_success(harness: Harness) -> None:
    user = await _user(harness)
    await harness.connector.grant(user, harness.target, grant_id="g1", expires_at=EXPIRES)
    await harness.connector.revoke(user, harness.target, grant_id="g1")
    assert not harness.controls.is_member(harness.target, user.id)
    assert not await harness.connector.is_member(user, harness.target)
    await harness.connector.revoke(user, harness.target, grant_id="g1")  # idempotent


async def test_conformance_list_members_follows_every_page(harness: Harness) -> None:
    members = await harness.connector.list_members(harness.paged_group)
    assert len(members) == harness.paged_group_size
    assert len({m.id for m in members}) == harness.paged_group_size


async def test_conformance_rate_limited_raises_with_retry_after(harness: Harness) -> None:
    user = await _user(harness)
    harness.controls.rate_limit_next(7)
    with pytest.raises(RateLimited) as info:
        await harness.connector.grant(user, harness.target, grant_id="g1", expires_at=EXPIRES)
    assert 6 <= info.value.retry_after <= 9


async def test_conformance_rate_limit_is_honoured_then_succeeds(harness: Harness) -> None:
    user = await _user(harness)
    sleep = RecordingSleep()
    harness.controls.rate_limit_next(5)
    result = await resilient(harness.connector, sleep).grant(user, harness.target, grant_id="g1",
                                                              expires_at=EXPIRES)
    assert result.added is True
    assert sleep.calls and 4 <= sum(sleep.calls) <= 8
    assert harness.controls.is_member(harness.target, user.id)


async def test_conformance_transient_error_is_retried(harness: Harness) -> None:
    user = await _user(harness)
    sleep = RecordingSleep()
    harness.controls.fail_next(503, count=2)
    await resilient(harness.connector, sleep).revoke(user, harness.target, grant_id="g1")
    assert len(sleep.calls) == 2


async def test_conformance_transient_error_is_typed(harness: Harness) -> None:
    harness.controls.fail_next(500)
    with pytest.raises(Transient):
        await harness.connector.find_user(harness.existing_email)


async def test_conformance_permission_denied_is_not_retried(harness: Harness) -> None:
    user = await _user(harness)
    sleep = RecordingSleep()
    harness.controls.forbid_next(count=5)
    before = harness.controls.api_calls
    with pytest.raises(PermissionDenied):
        await resilient(harness.connector, sleep).grant(user, harness.target, grant_id="g1", expires_at=EXPIRES)
    assert sleep.calls == []
    assert harness.controls.api_calls - before == 1
    assert not harness.controls.is_member(harness.target, user.id)


async def test_conformance_bad_credentials_fail_check_clearly(harness: Harness) -> None:
    if harness.bad_credentials is None:
        pytest.skip("this connector has no credentials")
    bad = await harness.bad_credentials()
    try:
        checks: list[Check] = await bad.check()
    finally:
        await bad.aclose()
    failed = [c for c in checks if not c.ok]
    assert failed, checks
    assert all(c.message for c in failed)


async def test_conformance_check_passes_with_good_credentials(harness: Harness) -> None:
    checks = await harness.connector.check()
    assert checks and all(c.ok for c in checks), checks


async def test_conformance_grant_expires_argument_is_accepted(harness: Harness) -> None:
    user = await _user(harness)
    await harness.connector.grant(user, harness.target, grant_id="g3",
                                  expires_at=datetime.now(UTC) + timedelta(hours=1))
    assert harness.controls.is_member(harness.target, user.id)
