"""Shared set-up of the strict Okta and Entra fakes (over TLS) for tests outside their connector modules.

``okta_fake()`` / ``entra_fake()`` start a fake with a throwaway CA; ``okta_settings`` /
``entra_settings`` are the matching ``connectors:`` entries (API token / client secret), usable as a
dict or rendered into a policy file with ``as_yaml``.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tests.fakes.idp.entra import FakeEntra
from tests.fakes.idp.okta import FakeOkta
from tests.fakes.idp.tls import localhost_tls

OKTA_TOKEN = "00SECRET-okta-api-token-value"
ENTRA_TENANT = "8f1c2d3e-0000-4000-8000-00000000beef"
ENTRA_CLIENT = "5a6b7c8d-0000-4000-8000-00000000c1d0"
ENTRA_SECRET = "Xy8Q~entra-SECRET-value-do-not-log"


def isolate_okta_sdk(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    """The okta SDK reads every ``OKTA_CLIENT_*`` variable and ./okta.yaml: keep both out of the test."""
    for name in list(os.environ):
        if name.startswith("OKTA_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@asynccontextmanager
async def okta_fake(page_size: int = 2) -> AsyncIterator[tuple[FakeOkta, str]]:
    context, ca_file = localhost_tls()
    fake = FakeOkta(api_token=OKTA_TOKEN, page_size=page_size)
    await fake.start(context)
    try:
        yield fake, ca_file
    finally:
        await fake.stop()


@asynccontextmanager
async def entra_fake(page_size: int = 2) -> AsyncIterator[tuple[FakeEntra, str]]:
    context, ca_file = localhost_tls()
    fake = FakeEntra(tenant_id=ENTRA_TENANT, client_id=ENTRA_CLIENT, client_secret=ENTRA_SECRET,
                     page_size=page_size)
    await fake.start(context)
    try:
        yield fake, ca_file
    finally:
        await fake.stop()
    # no exchange departed from Graph's description (tests/specs/graph)
    assert not fake.spec_violations, "\n".join(fake.spec_violations)


def okta_settings(fake: FakeOkta, ca_file: str) -> dict[str, Any]:
    return {"type": "okta", "org_url": fake.base_url, "api_token": OKTA_TOKEN, "ca_file": ca_file, "timeout": 5}


def entra_settings(fake: FakeEntra, ca_file: str) -> dict[str, Any]:
    return {"type": "entra", "tenant_id": ENTRA_TENANT, "client_id": ENTRA_CLIENT, "client_secret": ENTRA_SECRET,
            "authority_url": fake.authority_url, "graph_url": fake.graph_url, "ca_file": ca_file, "timeout": 5}


def as_yaml(name: str, settings: dict[str, Any], indent: int = 2) -> str:
    """``name:`` and its settings as a block of a policy's ``connectors:`` (JSON values are valid YAML)."""
    pad = " " * indent
    return f"{pad}{name}:\n" + "".join(f"{pad}  {k}: {json.dumps(v)}\n" for k, v in settings.items())
