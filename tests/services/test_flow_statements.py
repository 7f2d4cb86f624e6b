"""The SQL statements one complete access flow runs on SQLite (tests/services/flow_statements.py), counted
and bounded: a statement added to a flow's path shows up here, with the table that says where it runs."""

from __future__ import annotations

import pytest

from bot.services.clock import ManualClock
from tests.conftest import DbFactory
from tests.services.flow_statements import count_flow

# /jit, submit, the approval, the grant, the release, the revocation and every message delivered
FLOW_STATEMENTS = 131


@pytest.mark.parametrize("db_factory", ["sqlite"], indirect=True)
async def test_one_flow_runs_no_more_statements_than_counted(db_factory: DbFactory, clock: ManualClock) -> None:
    db = db_factory()
    if db._inline is None:
        pytest.skip("JITBOT_SQLITE_THREADS=1: the statements run on aiosqlite's threads, out of the trace's reach")
    trace = await count_flow(db, clock)
    print(trace.table())  # pytest -s: the flow's statements by text and by call site
    assert len(trace.statements) <= FLOW_STATEMENTS, trace.table()


@pytest.mark.parametrize("db_factory", ["sqlite"], indirect=True)
async def test_a_revocation_that_calls_the_idp_reads_the_votes_once(db_factory: DbFactory,
                                                                      clock: ManualClock) -> None:
    """Deciding the revocation needs no votes for a grant whose membership goes: recording it reads them."""
    db = db_factory()
    if db._inline is None:
        pytest.skip("JITBOT_SQLITE_THREADS=1: the statements run on aiosqlite's threads, out of the trace's reach")
    trace = await count_flow(db, clock)
    votes = [site for text, site in trace.statements if text.startswith("SELECT approval_vote.")]
    assert sum("revocation" in site for site in votes) == 1, votes


@pytest.mark.parametrize("db_factory", ["sqlite"], indirect=True)
async def test_adding_a_membership_is_one_statement(db_factory: DbFactory, clock: ManualClock) -> None:
    db = db_factory()
    if db._inline is None:
        pytest.skip("JITBOT_SQLITE_THREADS=1: the statements run on aiosqlite's threads, out of the trace's reach")
    trace = await count_flow(db, clock)
    adds = [text for text, site in trace.statements if site.startswith("services/access/memberships.py")
            and " add" in site and text not in ("BEGIN IMMEDIATE", "COMMIT")]
    assert len(adds) == 1 and adds[0].startswith("INSERT INTO memory_membership"), adds
