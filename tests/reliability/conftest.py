"""Fixtures of the tests that run real ``jitbot`` processes (tests/reliability/procs.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.reliability.procs import create_database, drop_database


@pytest.fixture
async def database() -> AsyncIterator[tuple[str, str]]:
    """A fresh, empty PostgreSQL database for one test's processes: (name, SQLAlchemy URL); dropped after."""
    name, url = await create_database()
    yield name, url
    await drop_database(name)
