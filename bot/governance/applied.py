"""The applied policy in the database: ``eligibility`` rows plus the ``kv`` row ``applied_policy``.

``applied_policy`` holds the file's sha256, who applied it and when, the non-eligibility settings, the
file text (the last good policy, used by ``serve`` when the file on disk is invalid) and a digest of
the eligibility rows as written, so that rows edited behind ``apply``'s back show up as drift.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from bot.governance.plan import Plan, definitions, global_settings, make_plan
from bot.policy_file import LoadedPolicy
from bot.services import kvstate, policy_version
from bot.services.auditing.audit import append_event
from bot.services.outbox.dispatcher import AUDIT_LANE, enqueue
from storage.db import Database
from storage.tables import EligibilityRow

KEY = "applied_policy"


def digest(defs: dict[str, dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(defs, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class Applied:
    """What the database says is live."""

    sha256: str | None
    actor: str | None
    applied_at: str | None
    settings: dict[str, Any] | None
    definitions: dict[str, dict[str, Any]]
    text: str | None
    rows_digest_ok: bool  # False: the eligibility table differs from what ``apply`` wrote (drift)


async def _rows(session: AsyncSession) -> dict[str, dict[str, Any]]:
    rows = (await session.execute(select(EligibilityRow).where(col(EligibilityRow.active).is_(True)))).scalars()
    return {r.name: dict(r.definition) for r in rows}


async def read_applied(db: Database) -> Applied:
    async with db.sessions() as session:
        return await _read(session)


async def _read(session: AsyncSession, *, lock: bool = False) -> Applied:
    kv = await kvstate.read(session, KEY, lock=lock) or {}
    defs = await _rows(session)
    return Applied(kv.get("sha256"), kv.get("actor"), kv.get("applied_at"), kv.get("settings"), defs,
                   kv.get("text"), kv.get("rows_digest", digest({})) == digest(defs))


def drift_lines(applied: Applied, loaded: LoadedPolicy) -> list[str]:
    """Why the database and the file disagree, beyond the plan itself."""
    out = []
    if applied.sha256 is None:
        out.append("no policy has been applied to this database yet")
    elif applied.sha256 != loaded.sha256:
        out.append(f"drift: the file ({loaded.sha256[:12]}) differs from the applied policy "
                   f"({applied.sha256[:12]}, applied by {applied.actor} at {applied.applied_at})")
    if not applied.rows_digest_ok:
        out.append("drift: the eligibility table was changed outside `jitbot policy apply`")
    return out


async def plan_against_db(db: Database, loaded: LoadedPolicy) -> tuple[Plan, Applied]:
    applied = await read_applied(db)
    return make_plan(applied.definitions, applied.settings, loaded), applied


async def apply_policy(db: Database, loaded: LoadedPolicy, *, actor: str, now: datetime) -> Plan | None:
    """Store ``loaded`` as the applied policy and record ``policy_applied`` (hash, who, when, the diff)
    in the audit chain and the audit channel, in one transaction. Returns None when it was applied
    already (same file hash, rows intact): nothing is written."""
    return (await apply_versioned(db, loaded, actor=actor, now=now))[0]


async def read_version(db: Database) -> tuple[int, str | None]:
    """The applied policy's version and sha256 (0, None: nothing applied yet)."""
    async with db.sessions() as session:
        value = await kvstate.read(session, policy_version.KEY) or {}
    return policy_version.version_of(value), value.get("sha256")


async def apply_versioned(db: Database, loaded: LoadedPolicy, *, actor: str,
                          now: datetime) -> tuple[Plan | None, int]:
    """``apply_policy``, and the version the file is applied as: the next one when it changed anything,
    else the version it already has."""
    async with db.transaction() as session:
        # Replicas starting together apply at once; the kv row may not exist yet (nothing to lock),
        # so serialise on the audit-chain lock that append_event takes below anyway.
        await db.lock_audit_chain(session)
        applied = await _read(session, lock=True)
        version = policy_version.version_of(await kvstate.read(session, policy_version.KEY, lock=True))
        if applied.sha256 == loaded.sha256 and applied.rows_digest_ok and version > 0:
            return None, version
        version += 1  # replicas follow it (bot/services/policy_version.py)
        plan = make_plan(applied.definitions, applied.settings, loaded)
        wanted = definitions(loaded.policy)
        existing = {r.name: r for r in (await session.execute(select(EligibilityRow))).scalars()}
        for name, definition in wanted.items():
            row = existing.get(name)
            if row is None:
                session.add(EligibilityRow(name=name, definition=definition, policy_sha256=loaded.sha256,
                                           applied_at=now, active=True))
            else:
                row.definition, row.policy_sha256, row.applied_at, row.active = definition, loaded.sha256, now, True
        for name, row in existing.items():
            if name not in wanted and row.active:
                row.active, row.applied_at = False, now
        await kvstate.write(session, KEY, {
            "sha256": loaded.sha256, "path": loaded.path, "actor": actor, "applied_at": now.isoformat(),
            "settings": global_settings(loaded), "text": loaded.text, "rows_digest": digest(wanted),
            "version": version})
        await kvstate.write(session, policy_version.KEY, {"version": version, "sha256": loaded.sha256})
        await append_event(session, at=now, kind="policy_applied", actor=actor,
                           detail={"sha256": loaded.sha256, "path": loaded.path, "previous_sha256": applied.sha256,
                                   "version": version, "diff": plan.to_json()})
        enqueue(session, at=now, order_key=AUDIT_LANE, kind="audit",
                payload={"request": None, "event": "policy_applied", "actor": actor,
                         "text": f"policy {loaded.sha256[:12]} applied from {loaded.path} as version {version}: "
                                 f"{plan.summary()}"})
    return plan, version
