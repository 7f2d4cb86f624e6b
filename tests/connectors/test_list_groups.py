"""The optional ``list_groups`` capability: memory, Okta (paged, ``expand=stats``) and Entra (``nextLink``)."""

from __future__ import annotations

import os

import pytest

from connectors.base import GroupInfo, GroupLister, group_lister
from connectors.entra import from_settings as entra_from_settings
from connectors.memory import MemoryConnector
from connectors.okta import from_settings as okta_from_settings
from connectors.resilience import ResilientConnector
from tests.connectors.idp_fixtures import entra_fake, entra_settings, isolate_okta_sdk, okta_fake, okta_settings


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    isolate_okta_sdk(monkeypatch, tmp_path)


async def test_memory_lists_declared_groups_with_counts() -> None:
    conn = MemoryConnector.from_settings("demo", {
        "users": [{"email": "a@example.com"}, {"email": "b@example.com"}],
        "groups": {"admins": ["a@example.com", "b@example.com"], "empty": []}})
    assert await conn.list_groups() == [GroupInfo("admins", "admins", 2), GroupInfo("empty", "empty", 0)]
    assert group_lister(conn) is conn


async def test_okta_lists_every_group_across_pages_with_user_counts() -> None:
    async with okta_fake(page_size=2) as (fake, ca_file):
        users = [fake.add_user(f"u{i}@example.com") for i in range(3)]
        ids = [fake.add_group(f"group-{i}", users[:i]) for i in range(5)]
        conn = okta_from_settings("okta", okta_settings(fake, ca_file))
        try:
            before = fake.api_calls
            groups = await conn.list_groups()
        finally:
            await conn.aclose()
    assert groups == [GroupInfo(ids[i], f"group-{i}", min(i, 3)) for i in range(5)]
    assert fake.api_calls - before == 3  # 5 groups, pages of 2


async def test_entra_lists_every_group_following_next_link() -> None:
    async with entra_fake(page_size=2) as (fake, ca_file):
        ids = [fake.add_group(f"group-{i}") for i in range(5)]
        conn = entra_from_settings("entra", entra_settings(fake, ca_file))
        try:
            before = fake.api_calls
            groups = await conn.list_groups()
        finally:
            await conn.aclose()
    assert groups == [GroupInfo(ids[i], f"group-{i}") for i in range(5)]
    assert fake.api_calls - before == 3


async def test_capability_is_found_through_the_resilience_wrapper_and_absent_when_not_implemented() -> None:
    async with okta_fake() as (fake, ca_file):
        fake.add_group("only")
        wrapped = ResilientConnector(okta_from_settings("okta", okta_settings(fake, ca_file)))
        try:
            lister = group_lister(wrapped)
            assert lister is wrapped and isinstance(lister, GroupLister)
            assert [g.name for g in await lister.list_groups()] == ["only"]
        finally:
            await wrapped.aclose()
    assert group_lister(_NoGroups()) is None
    assert group_lister(ResilientConnector(_NoGroups())) is None  # type: ignore[arg-type]


class _NoGroups:
    """A connector without the capability (only what the test touches)."""

    name = "plain"

    async def aclose(self) -> None:
        return None
