"""Delivers outbox messages to Slack: DMs, approval-message updates, the audit channel (threaded)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.services import people
from bot.services.clock import Clock, SystemClock
from bot.services.outbox.dispatcher import (
    Delivery,
    FollowUp,
    PermanentFailure,
    Ref,
    RetryLater,
    deliver_each,
    message_refs,
)
from bot.services.requesting import approval_reads
from bot.slack import audit_digest, blocks, channel_asks, request_messages

if TYPE_CHECKING:
    from storage.db import Database

log = logging.getLogger(__name__)


def copy_key(request_id: str, layer: int, ref: Ref) -> str:
    """The order key of one approver's copy's updates: in order for that copy, apart from the others."""
    return f"{request_id}:layer{layer}:{ref.channel}:{ref.ts}"[:64]

PERMANENT = {"channel_not_found", "users_not_found", "user_not_found", "not_in_channel", "is_archived",
             "cannot_dm_bot", "user_disabled", "invalid_blocks", "invalid_arguments", "msg_too_long",
             "message_not_found", "cant_update_message"}
ROOT_CACHE = 5000
USER_CACHE = 20000
USER_MEMORY = timedelta(minutes=10)  # then read again from the database (another replica may know better)
LOOKUP_BURST = 8  # users.lookupByEmail calls a paced notifier may make at once after a quiet spell
DIGEST_CHARS = 39000  # under chat.postMessage's 40,000-character text limit


class SlackNotifier:
    def __init__(self, client: AsyncWebClient, db: Database, *, audit_channel: str,
                 security_channel: str | None = None, clock: Clock | None = None) -> None:
        self.client = client
        self.db = db
        self.audit_channel = audit_channel
        self.security_channel = security_channel
        self.clock = clock or SystemClock()
        self._users: dict[str, tuple[str, datetime]] = {}  # email → (Slack id, read at); bounded
        # users.lookupByEmail is Tier 3, 50+ a minute (https://docs.slack.dev/reference/methods/users.lookupByEmail)
        self.lookups_per_minute = 50.0
        self._lookups_paused_until = 0.0
        self._lookups_waiting = 0
        self._lookups_paced_until = 0.0  # after a 429: calls kept to the tier's rate until then
        self._lookup_tat = 0.0  # the tier's pace as a theoretical arrival time (GCRA)
        self._roots: dict[str, str] = {}  # request id -> ts of its audit thread's root (insertion order)

    async def deliver(self, kind: str, payload: dict[str, Any]) -> Delivery:
        return await self._guarded(kind, getattr(self, f"_{kind}")(payload))

    async def deliver_batch(self, kind: str, payloads: list[dict[str, Any]]) -> Delivery:
        """Audit lines that waited together: one digest post (the lines name their requests; no threads)."""
        if kind != "audit":
            return await deliver_each(self, [(kind, p) for p in payloads])
        return await self._guarded(kind, self._audit_digest(payloads))

    def batch_fits(self, kind: str, payloads: list[dict[str, Any]]) -> int:
        """How many of the audit lines (from the first) one digest post holds (DIGEST_CHARS)."""
        return audit_digest.fitting(payloads, DIGEST_CHARS) if kind == "audit" else len(payloads)

    async def _guarded(self, kind: str, call: Awaitable[Delivery]) -> Delivery:
        try:
            return await call
        except SlackApiError as exc:
            status = exc.response.status_code
            error = str(exc.response.get("error", "")) if isinstance(exc.response.data, dict) else ""
            log.warning("slack %s failed: HTTP %s %s", kind, status, error)
            if status == 429 or error == "ratelimited":
                after = float(exc.response.headers.get("Retry-After", 5))
                raise RetryLater("slack rate limited", after=after) from None
            if error in PERMANENT:
                raise PermanentFailure(f"slack error {error}") from None
            raise RetryLater(f"slack error {error or status}") from None
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
            raise RetryLater(f"slack unreachable: {type(exc).__name__}") from None

    async def _post(self, **kwargs: Any) -> Any:
        """chat.postMessage without link or media previews: messages carry user text (a justification,
        a reason), and a URL in it is not to be unfurled into the approvers' DMs or the audit channel."""
        return await self.client.chat_postMessage(unfurl_links=False, unfurl_media=False, **kwargs)

    async def slack_user(self, email: str) -> str:
        """The Slack id of ``email``: remembered here, else in the database (``bot/services/people.py``,
        shared by replicas and restarts), else asked of Slack (a Tier 3 method) and written down."""
        email = email.lower()
        hit = self._users.get(email)
        if hit is None or self.clock.now() - hit[1] >= USER_MEMORY:
            now = self.clock.now()
            user_id = await people.known(self.db, email, now)
            if user_id is None:
                user_id = await self._lookup(email)
                await people.remember(self.db, email, user_id, now)
            self._users.pop(email, None)
            if len(self._users) >= USER_CACHE:
                self._users.pop(next(iter(self._users)))
            self._users[email] = hit = (user_id, now)
        return hit[0]

    async def _lookup(self, email: str) -> str:
        """users.lookupByEmail, queued behind Slack's answer when it is rate limited: while a Retry-After
        runs, each message that needs a lookup waits its turn at the method's tier instead of trying
        again all at once (ten thousand messages each retrying every second would be ten thousand
        refused calls and database writes a second, starving the rest of the worker)."""
        # The clock's time (the injected one in tests), as Slack's own limits run on it.
        now, spacing = self.clock.now().timestamp(), 60.0 / self.lookups_per_minute
        # Once Slack has refused one, calls are kept to the tier's rate for a minute (a leaky bucket of
        # LOOKUP_BURST calls), instead of every waiter calling the moment the pause ends and most being
        # refused again: 10,000 people at once drew ~6,000 429s that way. Slack asks apps to stay under
        # its limits, not to find them by being refused. Until the first 429 Slack's burst is used in full.
        ahead = self._lookup_tat - now - LOOKUP_BURST * spacing  # > 0: over the pace
        paced = now < self._lookups_paced_until and ahead > 0
        if now < self._lookups_paused_until or paced:
            self._lookups_waiting += 1
            start = max(self._lookups_paused_until, now + ahead if paced else 0.0)
            raise RetryLater("slack lookups are rate limited: waiting its turn",
                             after=start - now + self._lookups_waiting * spacing)
        self._lookups_waiting = 0
        self._lookup_tat = max(self._lookup_tat, now) + spacing
        try:
            resp = await self.client.users_lookupByEmail(email=email)
        except SlackApiError as exc:
            if exc.response.status_code == 429:
                # Retry-After counts from Slack's answer (not from the call); of several 429s the latest ends last
                after, now = float(exc.response.headers.get("Retry-After", 5)), self.clock.now().timestamp()
                self._lookups_paused_until = max(self._lookups_paused_until, now + after)
                self._lookups_paced_until = self._lookups_paused_until + 60.0
                # the bucket is empty: one call when the pause ends, then one a ``spacing``
                self._lookup_tat = self._lookups_paused_until + LOOKUP_BURST * spacing
            raise
        return str(resp["user"]["id"])

    def forget_user(self, email: str) -> None:
        self._users.pop(email.lower(), None)

    async def _dm(self, user_id: str) -> str:
        # chat.postMessage with a user id as ``channel`` posts to that person's DM with the app (its App
        # Home Messages tab): no conversations.open (Tier 3) per person
        # (https://docs.slack.dev/reference/methods/chat.postMessage, argument ``channel``).
        return user_id

    async def _approval_request(self, p: dict[str, Any]) -> Delivery:
        if p.get("channel"):  # the layer's approver channel (bot/slack/channel_asks.py)
            return await channel_asks.deliver(self, p)
        snap, layer = p["request"], int(p["layer"])
        if not await self._layer_open(snap["id"], layer):  # decided meanwhile: withdrawn, nothing posted
            return Delivery()
        channel = await self._dm(await self.slack_user(p["approver"]))
        note = p.get("note")
        resp = await self._post(
            channel=channel, text=(f"{note} " if note else "")
            + f"Access request {snap['id']} from {snap['requester']} needs your decision",
            blocks=request_messages.approval_message(snap, layer, note))
        return Delivery([Ref(snap["id"], f"approval:{layer}", resp["channel"], resp["ts"], p["approver"])])

    async def _layer_open(self, request_id: str, layer: int) -> bool:
        return await approval_reads.layer_open(self.db, request_id, layer)

    async def _review_request(self, p: dict[str, Any]) -> Delivery:
        snap = p["request"]
        channel = await self._dm(await self.slack_user(p["reviewer"]))
        resp = await self._post(
            channel=channel, text=f"Break-glass use {snap['id']} by {snap['requester']} needs your review",
            blocks=request_messages.review_message(snap, p.get("note")))
        return Delivery([Ref(snap["id"], "review", resp["channel"], resp["ts"], p["reviewer"])])

    async def _review_update(self, p: dict[str, Any]) -> Delivery:
        snap = p["request"]
        for ref in await message_refs(self.db, snap["id"], "review"):
            await self.client.chat_update(channel=ref.channel, ts=ref.ts, text=f"{snap['id']}: {p['outcome']}",
                                          blocks=request_messages.review_decided(snap, p["outcome"]))
        return Delivery()

    async def _approval_update(self, p: dict[str, Any]) -> Delivery:
        """A layer's decision: one follow-up per approver's copy (``copy_update``), each its own outbox
        item, so that a 429 on one copy delays that copy only and the copies already edited stay done
        (one delivery editing them all started again from the first after every 429)."""
        snap, layer = p["request"], int(p["layer"])
        left = await approval_reads.asks_left(self.db, snap["id"], layer)  # asks in flight: after them
        if left:
            raise RetryLater(f"{left} ask(s) of the layer still in flight", after=1.0)
        refs = await message_refs(self.db, snap["id"], f"approval:{layer}")
        return Delivery(follow_ups=[FollowUp(copy_key(snap["id"], layer, r), "copy_update",
                                             {**p, "channel": r.channel, "ts": r.ts}) for r in refs])

    async def _copy_update(self, p: dict[str, Any]) -> Delivery:
        """One approver's copy of a decided layer's message, edited (idempotent: the same edit again
        changes nothing)."""
        snap, layer = p["request"], int(p["layer"])
        await self.client.chat_update(channel=p["channel"], ts=p["ts"], text=f"{snap['id']}: {p['outcome']}",
                                      blocks=request_messages.approval_decided(snap, layer, p["outcome"], p.get("at")))
        return Delivery()

    async def _requester(self, p: dict[str, Any]) -> Delivery:
        snap = p["request"]
        user = snap.get("requester_slack") or await self.slack_user(snap["requester"])
        channel = await self._dm(user)
        await self._post(channel=channel, text=blocks.notice(p["text"]),
                                           blocks=request_messages.requester_notice(snap, p["event"], p["text"]))
        return Delivery()

    async def _thread_root(self, snap: dict[str, Any]) -> tuple[str | None, list[Ref]]:
        # A request's audit thread never moves: its root is remembered (a bounded cache) instead of
        # being read back from the database for every audit line.
        if (ts := self._roots.get(snap["id"])) is not None:
            return ts, []
        refs = await message_refs(self.db, snap["id"], "audit_root")
        if refs:
            self._remember_root(snap["id"], refs[0].ts)
            return refs[0].ts, []
        resp = await self._post(channel=self.audit_channel, text=f"Access request {snap['id']}",
                                                  blocks=request_messages.audit_root(snap))
        self._remember_root(snap["id"], str(resp["ts"]))
        return resp["ts"], [Ref(snap["id"], "audit_root", resp["channel"], resp["ts"])]

    def _remember_root(self, request_id: str, ts: str) -> None:
        self._roots[request_id] = ts
        if len(self._roots) > ROOT_CACHE:
            self._roots.pop(next(iter(self._roots)))

    async def _audit(self, p: dict[str, Any]) -> Delivery:
        snap = p.get("request")
        thread_ts, new = (await self._thread_root(snap)) if snap else (None, [])
        await self._post(channel=self.audit_channel, text=request_messages.audit_text(p), thread_ts=thread_ts)
        return Delivery(new)

    async def _audit_digest(self, payloads: list[dict[str, Any]]) -> Delivery:
        lines = audit_digest.digest_lines(payloads)  # one line per request (bot/slack/audit_digest.py)
        for chunk in blocks.chunks(lines, DIGEST_CHARS):  # one post, unless the lines pass Slack's limit
            await self._post(channel=self.audit_channel, text=chunk)
        return Delivery()

    async def _alert(self, p: dict[str, Any]) -> Delivery:
        text = f":rotating_light: {blocks.notice(p['text'])}"
        snap = p.get("request")
        thread_ts, new = (await self._thread_root(snap)) if snap else (None, [])
        await self._post(channel=self.audit_channel, text=text, thread_ts=thread_ts,
                                           reply_broadcast=thread_ts is not None)
        if self.security_channel:
            await self._post(channel=self.security_channel, text=text)
        return Delivery(new)

    async def _report(self, p: dict[str, Any]) -> Delivery:
        resp = await self._post(channel=self.audit_channel, text=blocks.cut(p["text"], 39000),
                                                  mrkdwn=True)
        if p.get("attach_chart") and p.get("weekly"):
            await self._attach_chart(p, channel=str(resp["channel"]), thread_ts=str(resp["ts"]))
        return Delivery()

    async def _attach_chart(self, p: dict[str, Any], *, channel: str, thread_ts: str) -> None:
        """Upload the weekly chart under the review post. The text is already out, so a failed upload
        is reported in the thread and not retried (a retry would post the review twice)."""
        from datetime import date

        from bot.reports.chart import weekly_chart_png

        weekly = [(date.fromisoformat(str(w)[:10]), float(g), float(b)) for w, g, b in p["weekly"]]
        png = weekly_chart_png(weekly)
        try:
            await self.client.files_upload_v2(channel=channel, thread_ts=thread_ts, content=png,
                                              filename="jit-access-per-week.png",
                                              title="Privileged access per week vs standing baseline")
        except SlackApiError as exc:
            error = exc.response.get("error", "") if isinstance(exc.response.data, dict) else ""
            log.warning("report chart upload failed: %s", error)
            hint = " (add the files:write scope to the Slack app)" if error == "missing_scope" else ""
            await self._post(channel=channel, thread_ts=thread_ts,
                                               text=f"The chart could not be attached: {error}{hint}.")

    async def _transition_notice(self, p: dict[str, Any]) -> Delivery:
        channel = await self._dm(await self.slack_user(p["email"]))
        await self._post(channel=channel, text=blocks.notice(p["text"]))
        return Delivery()
