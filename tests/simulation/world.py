"""The simulated world of one seed: the real services on one database, the simulated IdP, a manual clock.

A *generation* is one process's services (``RequestService``, ``ApprovalService``, ``GrantService`` in
the ``Worker``, ``AdminService``, ``PolicyReloader``, ``ReconcileService``) built on a fresh engine over
the same database; ``restart`` drops one generation (its tasks die where they are, the IdP may or may not
have carried out the calls it had received) and builds the next, which recovers its claims as
``jitbot serve`` does on start.
"""

from __future__ import annotations

import asyncio
import random
import types
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select

import bot.governance.reload as reload_module
import bot.services.access.revocation as revocation
import bot.services.access.revocation_outcomes as revocation_outcomes
import bot.services.runtime as runtime_module
import tests.simulation.idp as idp_module
from bot.governance.applied import apply_policy
from bot.governance.reload import PolicyReloader
from bot.policy_file import LoadedPolicy, load_policy
from bot.services.access.reconcile import ReconcileService
from bot.services.admin import AdminService
from bot.services.background.worker import Worker
from bot.services.clock import ManualClock
from bot.services.directory import Directory
from bot.services.outbox.dispatcher import OutboxDispatcher, RecordingNotifier
from bot.services.requesting.approvals import ApprovalService
from bot.services.requesting.requests import RequestService
from bot.services.runtime import Runtime
from storage.db import Database
from storage.tables import AccessRequest, Event, Grant, OutboxMessage
from tests.simulation.idp import Outcome, PendingCall, SimConnector, SimIdp
from tests.simulation.model import USERS, Model, Violation, policy_without, standing
from tests.simulation.settle import settle

HELD = {f"{idp_module.__file__}:call"}  # where a task waits for the simulation to answer an IdP call
# The events that record a grant's end (bot/services/access/revocation_outcomes.py ``ended``), and the detail keys that
# mark an end made without an IdP call (another grant or standing access keeps it; it never started).
END_KINDS = frozenset({"expired", "revoked", "cleanup_done"})
NO_CALL_MARKS = frozenset({"membership_kept", "before_start"})
DRAIN_ADVANCE = timedelta(minutes=5, seconds=1)  # past every retry backoff (at most 300 s)
SOON = timedelta(seconds=3)


@dataclass
class Generation:
    db: Database
    rt: Runtime
    requests: RequestService
    approvals: ApprovalService
    admin: AdminService
    worker: Worker
    reloader: PolicyReloader


class World:
    def __init__(self, make_db: Callable[[], Database], policy_dir: Path, seed: int,
                 lenient: frozenset[str] = frozenset()) -> None:
        self.make_db = make_db
        self.policy_path = policy_dir / "policy.yml"
        self.clock = ManualClock()
        self.idp = SimIdp(USERS, standing())
        self.idp.clock = self.clock.now  # the IdP ends memberships at their expiry by this clock (the backstop)
        self.model = Model(lenient)
        self.rids: list[str] = []  # requests in the order submitted (steps name them by index)
        self.grant_request: dict[str, str] = {}
        self.seen_calls: set[int] = set()
        self.tasks: set[asyncio.Task[Any]] = set()  # background work the steps started (passes, slow steps)
        self.ignore: set[asyncio.Task[Any]] = set(asyncio.all_tasks())
        self.ids = random.Random(seed ^ 0x5EED)
        self.gen: Generation | None = None
        self.base_db: Database | None = None  # the first generation's engine (the runner's, long-lived)

    # ---- set-up ------------------------------------------------------------------------------------
    async def start(self) -> None:
        self.write_policy(frozenset())
        self.gen = await self._generation(fresh=True)
        self.base_db = self.gen.db

    def write_policy(self, removed: frozenset[str]) -> None:
        if removed not in _TEXTS:
            _TEXTS[removed] = yaml.safe_dump(policy_without(removed), sort_keys=False)
        self.policy_path.write_text(_TEXTS[removed])

    async def _generation(self, *, fresh: bool) -> Generation:
        db = self.make_db()
        loaded: LoadedPolicy = cached_policy(self.policy_path)
        connectors: dict[str, Any] = {"demo": SimConnector("demo", self.idp)}
        rt = Runtime(db=db, clock=self.clock, loaded=loaded, connectors=connectors,
                     directory=Directory(connectors, self.clock), instance_id="sim-worker")
        worker = Worker(rt, OutboxDispatcher(db, RecordingNotifier(), self.clock), worker_id="sim-worker")
        worker._start_sweeps = lambda: None  # type: ignore[method-assign]  # reconcile is a step of its own
        worker.grants.budget_s = 0.0  # a pass never waits for grants in flight (they stay in flight)
        rt.grant_taker = worker.grants.adopt  # as a started worker does: approved grants go straight to it
        await apply_policy(db, loaded, actor="sim", now=self.clock.now())
        if not fresh:
            await worker.recover()
        reloader = PolicyReloader(rt, str(self.policy_path), actor="sim")
        return Generation(db, rt, RequestService(rt), ApprovalService(rt), AdminService(rt), worker, reloader)

    @property
    def g(self) -> Generation:
        assert self.gen is not None
        return self.gen

    def _ours(self) -> list[asyncio.Task[Any]]:
        """Every task the services started (passes, grants handed to the worker, calls) and not done."""
        me = asyncio.current_task()
        return [t for t in asyncio.all_tasks() if t not in self.ignore and t is not me and not t.done()]

    async def close(self) -> None:
        self.idp.crash(set())
        tasks = self._ours()
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks)

    # ---- running ------------------------------------------------------------------------------------
    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        return task

    async def settle(self) -> None:
        await settle(HELD, self.ignore)
        for t in [t for t in self.tasks if t.done()]:
            self.tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                exc = t.exception()
                if isinstance(exc, Violation):
                    raise exc
                # a service's own failure inside a background pass: the worker logs and retries it
        await self._observe_calls()
        self.model.check_backstop(self.members(), self.idp.expiries, self.clock.now())

    async def _rid_of(self, grant_id: str) -> str | None:
        if grant_id not in self.grant_request:
            async with self.g.db.sessions() as session:
                row = (await session.execute(select(Grant.request_id, AccessRequest.bundle_id,  # type: ignore[call-overload]
                                                    AccessRequest.eligibility).join(
                    AccessRequest, AccessRequest.id == Grant.request_id).where(Grant.id == grant_id))).first()
            if row is None:
                return None
            rid = self.grant_request[grant_id] = row.request_id
            if row.bundle_id is not None and row.bundle_id != rid:  # a bundle's member, made at its approval
                self.model.bundle_member(rid, bundle=row.bundle_id, elig=row.eligibility)
        return self.grant_request[grant_id]

    async def _observe_calls(self) -> None:
        for call in self.idp.pending:
            if call.seq in self.seen_calls:
                continue
            self.seen_calls.add(call.seq)
            if call.op == "add":
                rid = await self._rid_of(call.grant_id)
                if rid is not None:
                    self.model.add_issued(rid, now=self.clock.now())

    async def answer(self, call: PendingCall, outcome: Outcome) -> None:
        self.idp.resolve(call, outcome)
        if call.op == "add" and outcome is Outcome.OK:
            rid = await self._rid_of(call.grant_id)
            if rid is not None:
                self.model.add_answered(rid, now=self.clock.now())
        await self.settle()

    async def refuse(self, call: PendingCall) -> None:
        """The IdP refuses ``call`` for good: an add's request fails (and its bundle with it)."""
        self.idp.refuse(call)
        if call.op == "add":
            rid = await self._rid_of(call.grant_id)
            if rid is not None:
                self.model.ended(rid, now=self.clock.now(), by="refused by the IdP")
        await self.settle()

    def members(self) -> set[tuple[str, str]]:
        self.idp.expire()
        return set(self.idp.members)

    async def tick(self) -> None:
        """A worker pass, in the background: it may wait on IdP calls while the next steps run."""
        self.spawn(self.g.worker.schedule_tick())
        await self.settle()

    async def restart(self, applied: set[int]) -> None:
        """The process dies: its tasks stop where they are (the IdP carried out the pending calls in
        ``applied``, answered none), and a new one starts on the same database."""
        old = self.g
        self.idp.crash(applied)
        for t in self._ours():
            t.cancel()
        await self.settle()
        self.tasks.clear()
        self.gen = None
        if old.db is not self.base_db:
            await old.db.dispose()
        self.gen = await self._generation(fresh=False)
        await self.settle()

    async def outage(self, minutes: int) -> None:
        """jitbot is stopped (its process gone, its calls in flight never answered nor carried out) while
        ``minutes`` pass: the IdP alone ends what jitbot added, at each membership's expiry. Then jitbot
        starts again on the same database and recovers."""
        old = self.g
        self.idp.crash(set())
        for t in self._ours():
            t.cancel()
        await settle(HELD, self.ignore)
        self.tasks.clear()
        self.gen = None
        if old.db is not self.base_db:
            await old.db.dispose()
        self.clock.advance(timedelta(minutes=minutes))
        self.model.check_outage(self.members(), self.clock.now())
        self.gen = await self._generation(fresh=False)
        await self.settle()

    async def drain(self) -> None:
        """Let jitbot catch up: time for every retry, then worker passes with every IdP call answered,
        until a pass finds nothing to do; then held must be exactly what is allowed."""
        self.clock.advance(DRAIN_ADVANCE)
        for _ in range(40):
            task = self.spawn(self.g.worker.schedule_tick())
            await self.settle()
            calls = 0
            while self.idp.pending:
                calls += 1
                await self.answer(self.idp.pending[0], Outcome.OK)
            if not task.done():
                await self.settle()
            report = task.result() if task.done() and not task.cancelled() and not task.exception() else None
            if calls == 0 and report is not None and not report.busy and not self.tasks:
                if not await self._due_soon():
                    break
                self.clock.advance(SOON)  # a grant put off a moment (behind a revoke of its membership)
        else:
            raise Violation("the worker did not settle after 40 passes with every IdP call answered")
        self.model.check_drained(self.members(), self.clock.now())
        async with self.g.db.sessions() as session:
            asks = (await session.execute(select(OutboxMessage.payload)
                                          .where(OutboxMessage.kind == "approval_request"))).scalars().all()
        self.model.check_asks(list(asks))
        await self.check_audit()

    async def _due_soon(self) -> bool:
        """Whether a grant or revocation is due within ``SOON``: the worker puts a grant off by 2 s while a
        revoke of the same membership is in flight (``grants._LATER``), which a manual clock never reaches."""
        async with self.g.db.sessions() as session:
            return (await session.execute(select(Grant.id).where(  # type: ignore[call-overload]
                Grant.status.in_(["granting", "revoking"]),  # type: ignore[attr-defined]
                Grant.next_attempt_at <= self.clock.now() + SOON).limit(1))).first() is not None  # type: ignore[operator]

    async def check_audit(self) -> None:
        """Every IdP add and remove jitbot was told succeeded is in the audit log exactly once (a late call
        under a stale claim, and its undo, by its ``stale_claim`` event: bot/services/access/fencing.py)."""
        async with self.g.db.sessions() as session:
            rows = (await session.execute(select(Event.kind, Event.detail))).all()  # type: ignore[call-overload]
        granted: dict[str, int] = {}
        removed: dict[str, int] = {}
        ended: dict[str, int] = {}
        reconcile_removed = 0
        late: set[str] = set()  # grants with a call made under a stale claim
        for kind, detail in rows:
            gid = str(detail.get("grant", "")) if isinstance(detail, dict) else ""
            if kind == "granted":
                granted[gid] = granted.get(gid, 0) + 1
            elif kind == "reconcile_removed":
                reconcile_removed += 1
            elif kind == "stale_claim":
                late.add(gid)
            elif gid and kind in END_KINDS:
                ended[gid] = ended.get(gid, 0) + 1
                if not NO_CALL_MARKS & set(detail):
                    removed[gid] = removed.get(gid, 0) + 1
        adds = {a.grant_id for a in self.idp.log if a.op == "add" and a.answered}
        removes = {a.grant_id for a in self.idp.log if a.op == "remove" and a.answered
                   and not a.grant_id.startswith("reconcile:")}
        problems = []
        problems += [f"{g} granted {n}× in the audit log" for g, n in granted.items() if n > 1]
        problems += [f"{g} ended {n}× in the audit log" for g, n in ended.items() if n > 1]
        problems += [f"IdP add for {g} not audited" for g in sorted(adds - set(granted) - late)]
        problems += [f"'granted' audited for {g} with no IdP add" for g in sorted(set(granted) - adds)]
        problems += [f"IdP remove for {g} not audited" for g in sorted(removes - set(removed) - late)]
        problems += [f"removal audited for {g} with no IdP remove" for g in sorted(set(removed) - removes)]
        n_rec = sum(1 for a in self.idp.log if a.op == "remove" and a.answered and a.grant_id.startswith("reconcile:"))
        if n_rec != reconcile_removed:
            problems.append(f"{n_rec} reconcile removals at the IdP, {reconcile_removed} audited")
        if problems:
            raise Violation("audit: " + "; ".join(problems))

    async def reload(self, removed: frozenset[str]) -> None:
        self.write_policy(removed)
        await self.g.reloader.reload()
        self.model.reloaded(removed)
        await self.settle()

    async def reconcile(self) -> None:
        await ReconcileService(self.g.rt).sweep()
        await self.settle()


_TEXTS: dict[frozenset[str], str] = {}
_PARSED: dict[str, LoadedPolicy] = {}


def cached_policy(path: str | Path, *, env: Any = None) -> LoadedPolicy:
    """``load_policy``, parsed once per text (a few shapes of one policy, parsed thousands of times)."""
    content = Path(path).read_text()
    if content not in _PARSED:
        _PARSED[content] = load_policy(path, env={})
    return _PARSED[content]


async def cached_checked_policy(path: str | Path) -> LoadedPolicy:
    """``check_policy`` for the reloader, parsed once per text (the simulation's policies all check)."""
    return cached_policy(path)


def seeded_ids(rng: random.Random) -> types.SimpleNamespace:
    """Stands in for ``secrets`` in ``bot.services.runtime``: request and grant ids from the seed, so that a
    replay orders rows (by id) as the run did."""
    return types.SimpleNamespace(choice=rng.choice)


class Determinism:
    """The process-wide knobs a seed sets and puts back: ids, backoff jitter, the revoker's linger."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._saved: list[tuple[Any, str, Any]] = []

    def __enter__(self) -> Determinism:
        self._set(runtime_module, "secrets", seeded_ids(random.Random(self.seed ^ 0x1D5)))
        self._set(revocation, "RECORD_LINGER", 0.0)  # a finished call is recorded at once (no wall-clock wait)
        self._set(revocation_outcomes, "random", random.Random(self.seed ^ 0xBAC))  # backoff jitter
        self._set(reload_module, "check_policy", cached_checked_policy)
        return self

    def _set(self, obj: Any, name: str, value: Any) -> None:
        self._saved.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    def __exit__(self, *exc: object) -> None:
        for obj, name, value in reversed(self._saved):
            setattr(obj, name, value)
