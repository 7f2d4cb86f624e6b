"""A short run of ``bench.recovery`` on both databases: grants overdue while the bot was down, half of
them still claimed by its previous life (as a SIGKILL leaves them), are all revoked once, ended and
audited once after a restart. Counts only; the time it takes is the benchmark's figure."""

from __future__ import annotations

import pytest

from bench.recovery import problems, run
from tests import pg
from tests.conftest import _drop_pg_schema, _pg_schema


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_overdue_grants_and_a_dead_processs_claims_are_all_revoked_after_a_restart(database: str) -> None:
    n = 60
    if database == "sqlite":
        r = await run(n, None, deadline=30)
    else:
        schema = await _pg_schema()
        try:
            r = await run(n, pg.url(), deadline=30, schema=schema)
        finally:
            await _drop_pg_schema(schema)
    assert problems(r, n) == []
    assert r["revoked"] == n and r["audited_once"] == n  # what ``problems`` holds, said once more
