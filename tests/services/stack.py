"""A whole engine (no Slack) on one database, rebuilt at will to simulate restarts."""

from __future__ import annotations

from dataclasses import dataclass

from bot.bootstrap import build_connectors
from bot.policy_file import LoadedPolicy
from bot.services.access.grants import GrantService
from bot.services.background.worker import Worker
from bot.services.clock import ManualClock
from bot.services.directory import Directory
from bot.services.outbox.dispatcher import OutboxDispatcher, RecordingNotifier
from bot.services.requesting.approvals import ApprovalService
from bot.services.requesting.requests import RequestService
from bot.services.runtime import Runtime
from connectors.base import IdpUser, Target, TargetKind
from storage.db import Database


@dataclass
class Stack:
    rt: Runtime
    requests: RequestService
    approvals: ApprovalService
    grants: GrantService
    worker: Worker
    notifier: RecordingNotifier

    async def is_member(self, email: str, group: str, connector: str = "demo") -> bool:
        user = IdpUser(id=email, email=email)
        return await self.rt.connectors[connector].is_member(user, Target(TargetKind.GROUP, group))


async def make_stack(db: Database, loaded: LoadedPolicy, clock: ManualClock,
                     notifier: RecordingNotifier | None = None, *, migrate: bool = True) -> Stack:
    if migrate:
        await db.migrate()
    connectors = build_connectors(loaded, db)
    rt = Runtime(db=db, clock=clock, loaded=loaded, connectors=connectors, directory=Directory(connectors, clock))
    notifier = notifier or RecordingNotifier()
    worker = Worker(rt, OutboxDispatcher(db, notifier, clock), worker_id="test-worker")
    return Stack(rt, RequestService(rt), ApprovalService(rt), GrantService(rt), worker, notifier)
