"""Replicas in the simulation: a second worker process (*the peer*) on the same database and IdP.

The peer is a generation of its own (its engine, ``Runtime``, ``Worker``; instance ``sim-peer``) beside
the world's. Its clock is the world's clock skewed within the bound the clock guard enforces (10 s,
bot/services/background/clock_guard.py), and its policy is the one it loaded last: after a ``reload`` the two
replicas run different policy versions until the peer reloads too. A worker *paused past its lease* is
one whose IdP call is in flight (the simulation has not answered it) while the clock moves past the
lease (``pause``): the other replica's next pass may take its claim over, and the paused call, answered
later, comes back with a stale token (bot/services/access/fencing.py). The policy marks ``x-auto`` as
``enforce: true``, so reconciliation removes members of ``x`` it finds without a grant — which a live
grant's membership, or one in flight, must never be taken for.

Step kinds (plain ``Step`` data, replayed like the others; ``pick`` mixes them with ``steps.pick``):

- ``peer_tick``: a pass of the peer, in the background (its IdP calls wait like the world's);
- ``pause``: the clock moves past every lease (``LEASE`` + 1 s) — whatever is in flight stays in flight;
- ``skew``: the peer's clock offset becomes ``args[0]`` seconds (−9 … 9);
- ``peer_reload``: the peer reloads the policy file (the world's ``reload`` writes it);
- ``reconcile_enforce``: a reconciliation sweep (under ``enforce`` for ``x``) run by the peer.

``run_replicas`` runs a seed as ``runner.run`` does, with this world and these steps.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import yaml

from bot.governance.applied import apply_policy
from bot.governance.reload import PolicyReloader
from bot.services.access.reconcile import ReconcileService
from bot.services.background.worker import Worker
from bot.services.claims import LEASE
from bot.services.directory import Directory
from bot.services.outbox.dispatcher import OutboxDispatcher, RecordingNotifier
from bot.services.runtime import Runtime
from tests.simulation.idp import SimConnector
from tests.simulation.model import Violation, policy_without
from tests.simulation.runner import Databases, Failure, Outcome, finish
from tests.simulation.settle import Stuck
from tests.simulation.steps import Step, apply, pick
from tests.simulation.world import Determinism, World, cached_policy

PEER = "sim-peer"
MAX_SKEW_S = 9  # within the clock guard's bound (10 s)
KINDS = {"peer_tick": 10, "pause": 4, "skew": 2, "peer_reload": 2, "reconcile_enforce": 2}
SHARE = 0.35  # of the steps, how many are the peer's kinds
STEPS = 16


class SkewedClock:
    """The world's manual clock, ``offset`` ahead (or behind)."""

    def __init__(self, base: Any) -> None:
        self.base, self.offset = base, timedelta(0)

    def now(self) -> datetime:
        result: datetime = self.base.now() + self.offset
        return result


@dataclass
class Peer:
    rt: Runtime
    worker: Worker
    reloader: PolicyReloader


class ReplicaWorld(World):
    """The world with a peer replica; the policy enforces membership of ``x`` (``x-auto``)."""

    peer: Peer | None = None

    def write_policy(self, removed: frozenset[str]) -> None:
        if removed not in _TEXTS:
            doc = policy_without(removed)
            for e in doc["eligibilities"]:
                if e["name"] == "x-auto":
                    e["enforce"] = True
            _TEXTS[removed] = yaml.safe_dump(doc, sort_keys=False)
        self.policy_path.write_text(_TEXTS[removed])

    async def start(self) -> None:
        await super().start()
        self.skewed = SkewedClock(self.clock)
        self.peer = await self._peer(fresh=True)

    async def _peer(self, *, fresh: bool) -> Peer:
        db = self.g.db  # one database; the peer's own engine would be a restart's (Databases.fresh)
        loaded = cached_policy(self.policy_path)
        connectors: dict[str, Any] = {"demo": SimConnector("demo", self.idp)}
        rt = Runtime(db=db, clock=self.skewed, loaded=loaded, connectors=connectors,  # type: ignore[arg-type]
                     directory=Directory(connectors, self.skewed), instance_id=PEER)  # type: ignore[arg-type]
        worker = Worker(rt, OutboxDispatcher(db, RecordingNotifier(), self.skewed), worker_id=PEER)  # type: ignore[arg-type]
        worker._start_sweeps = lambda: None  # type: ignore[method-assign]
        worker.grants.budget_s = 0.0
        await apply_policy(db, loaded, actor="sim", now=self.skewed.now())
        if not fresh:
            await worker.recover()
        reloader = PolicyReloader(rt, str(self.policy_path), actor="sim")
        rt.follower = reloader  # as `serve`/`worker` follow the applied version (its timer aside: peer_reload)
        return Peer(rt, worker, reloader)

    @property
    def p(self) -> Peer:
        assert self.peer is not None
        return self.peer

    async def restart(self, applied: set[int]) -> None:
        """Both processes die (the IdP's pending calls are the world's and the peer's alike) and restart."""
        await super().restart(applied)
        self.peer = await self._peer(fresh=False)
        await self.settle()

    async def drain(self) -> None:
        """As the world's, after the peer's clock is set right (a replica beyond the bound does nothing)."""
        self.skewed.offset = timedelta(0)
        await super().drain()


_TEXTS: dict[frozenset[str], str] = {}


def pick_step(rng: random.Random, world: World) -> Step:
    if rng.random() >= SHARE:
        return pick(rng, world)
    kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
    if kind == "skew":
        return Step(kind, (rng.randint(-MAX_SKEW_S, MAX_SKEW_S),))
    return Step(kind)


async def apply_step(world: ReplicaWorld, step: Step) -> str:
    k = step.kind
    if k not in KINDS:
        return await apply(world, step)
    if k == "peer_tick":
        world.spawn(world.p.worker.schedule_tick())
    elif k == "pause":
        world.clock.advance(LEASE + timedelta(seconds=1))
    elif k == "skew":
        world.skewed.offset = timedelta(seconds=step.args[0])
    elif k == "peer_reload":
        await world.p.reloader.reload()
    elif k == "reconcile_enforce":
        await ReconcileService(world.p.rt).sweep()
    await world.settle()
    return ""


async def run_replicas(seed: int, dbs: Databases, *, steps: list[Step] | None = None,
                       n_steps: int = STEPS) -> Outcome:
    """One seed with a peer replica (``runner.run``'s loop with this world and these steps)."""
    rng = random.Random(seed)
    trace: list[tuple[Step, str]] = []
    kinds: dict[str, int] = {}
    make_db = await dbs.fresh()
    with Determinism(seed):
        world = ReplicaWorld(make_db, dbs.dir, seed)
        failure = None
        try:
            await world.start()
            todo = list(steps) if steps is not None else None
            for _ in range(len(todo) if todo is not None else n_steps):
                step = todo.pop(0) if todo is not None else pick_step(rng, world)
                kinds[step.kind] = kinds.get(step.kind, 0) + 1
                trace.append((step, ""))
                trace[-1] = (step, await apply_step(world, step))
                world.model.check_always(world.members())
            trace.append((Step("finish"), ""))
            await finish(world)
        except Violation as exc:
            failure = Failure(seed, dbs.backend, str(exc), exc.kind, trace)
        except Stuck as exc:
            failure = Failure(seed, dbs.backend, str(exc), "stuck", trace)
        finally:
            await world.close()
            await dbs.release()
    return Outcome(seed, failure, len(trace), kinds, trace)
