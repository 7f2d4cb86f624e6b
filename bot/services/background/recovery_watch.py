"""Recovery-account monitoring: every sign-in of a static break-glass admin account is posted for review.

The policy lists ``recovery_accounts: [{email, connector}]``. Every ``interval`` (once across replicas,
``kv['recovery:schedule']``) the watch asks each account's connector for new sign-ins through the optional
``SignInLog`` capability (Okta System Log, Entra sign-in logs) and, for each one, writes a
``recovery_sign_in`` event to the audit log and an ``alert`` (audit channel and security channel).

The cursor per account is kept in ``kv['recovery:<connector>:<email>']`` with the ids of the latest events,
and is advanced in the same transaction as the alerts, by compare-and-set against the cursor the poll
started from: a restart or a second replica neither misses nor repeats a sign-in. A provider that fails
leaves the cursor where it was; the next poll reads the same events again.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain.policy_sections import RecoveryAccount
from bot.services import kvstate, notices
from bot.services.auditing.audit import append_event
from bot.services.runtime import Runtime
from connectors.base import ConnectorError, SignIn, sign_in_log

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = timedelta(minutes=5)
LOOKBACK = timedelta(days=1)  # the first poll of an account reports its sign-ins of the last day
SCHEDULE_KEY = "recovery:schedule"
KEEP_SEEN = 200  # event ids remembered per account, against providers whose cursors overlap


def cursor_key(account: RecoveryAccount) -> str:
    key = f"recovery:{account.connector}:{account.email.lower()}"
    return key if len(key) <= 128 else "recovery:" + hashlib.sha256(key.encode()).hexdigest()


def alert_text(e: SignIn) -> str:
    where = ", ".join(p for p in (f"IP {e.ip}" if e.ip else "", e.detail, e.client or "") if p)
    outcome = f" ({e.outcome.lower()})" if e.outcome and e.outcome.upper() != "SUCCESS" else ""
    return (f"Recovery account {e.account} signed in{outcome} at {e.at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
            f"{' — ' + where if where else ''}. Recovery accounts are for outages only: was this expected?")


class RecoveryWatch:
    def __init__(self, rt: Runtime, *, interval: timedelta = DEFAULT_INTERVAL, lookback: timedelta = LOOKBACK) -> None:
        self.rt, self.interval, self.lookback = rt, interval, lookback

    async def run_if_due(self) -> int | None:
        """Poll when ``interval`` has passed since any replica last did; None when not due (or nothing to watch)."""
        if not self.rt.policy.recovery_accounts:
            return None
        if not await kvstate.take_turn(self.rt.db, SCHEDULE_KEY, now=self.rt.clock.now(), every=self.interval,
                                       by=self.rt.instance_id):
            return None
        return await self.poll()

    async def poll(self) -> int:
        """Read every account's new sign-ins and alert each once; returns how many were alerted."""
        alerted = 0
        for account in self.rt.policy.recovery_accounts:
            try:
                alerted += await self._poll_account(account)
            except ConnectorError as exc:  # the cursor stays: the next poll reads these events again
                log.warning("recovery watch %s at %s failed: %s", account.email, account.connector, exc)
            except Exception:  # one account must not stop the others (or the worker's tick)
                log.exception("recovery watch %s at %s failed", account.email, account.connector)
        return alerted

    async def _poll_account(self, account: RecoveryAccount) -> int:
        rt, key = self.rt, cursor_key(account)
        reader = sign_in_log(rt.connectors.get(account.connector))
        if reader is None:
            log.warning("recovery watch: connector %s cannot read sign-ins; %s is not watched",
                        account.connector, account.email)
            return 0
        async with rt.db.sessions() as session:
            state = await kvstate.read(session, key) or {}
        now = rt.clock.now()
        start = datetime.fromisoformat(state["start"]) if "start" in state else now - self.lookback
        events, cursor = await reader.sign_ins(account.email, state.get("cursor"), start=start)
        seen: list[str] = list(state.get("seen", []))
        fresh = [e for e in dict((e.id, e) for e in events).values() if e.id not in seen]

        def advance(current: kvstate.Value | None) -> kvstate.Value | None:
            if (current or {}).get("cursor") != state.get("cursor"):
                return None  # another replica advanced it meanwhile: its alerts stand, ours would repeat
            return {"cursor": cursor, "start": start.isoformat(), "polled_at": now.isoformat(),
                    "seen": (seen + [e.id for e in fresh])[-KEEP_SEEN:]}

        async def report(session: AsyncSession, _: kvstate.Value) -> None:
            for e in fresh:
                await append_event(session, at=now, kind="recovery_sign_in", actor=e.account,
                                   detail=_detail(account, e))
                notices.alert(session, at=now, snap=None, text=alert_text(e))

        if await kvstate.compare_and_set(rt.db, key, advance, report) is None:
            return 0
        if fresh:
            log.warning("recovery account %s: %d sign-in(s) posted for review", account.email, len(fresh))
        return len(fresh)


def _detail(account: RecoveryAccount, e: SignIn) -> dict[str, Any]:
    return {"connector": account.connector, "account": e.account, "event_id": e.id, "at": e.at.isoformat(),
            "ip": e.ip, "client": e.client, "outcome": e.outcome, "where": e.detail}
