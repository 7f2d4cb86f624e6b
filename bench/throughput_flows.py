"""The load generator of ``bench.throughput``: flows driven through the fake Slack — /jit, the modal
submitted, the approver's click, the "You now have …" DM — each step timed, and (not on the floor) the
access released after each flow, untimed.

A step's condition is looked at again when the fake Slack has answered a call that can change it (every
step ends with one), not on a timer: polling 60 flows every 5 ms cost the load generator more CPU than
the bot spent, on the same two cores. A wait names the channels it watches (the user's ID and DM): a
chat.* call wakes only the waits on its channel; any other call (views.open, conversations.open) wakes
them all. Waking every wait on every call cost the load generator ~64 task wake-ups per call.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bot.fakes import FakeSlack, SlackSender
from bot.slack import ids


class FlowDriver:
    """Runs flows against the replicas behind ``senders`` (round-robin; a flow's approval click goes to the
    next replica), ``concurrency`` at a time, one at a time per user. ``durations``: each flow's time from
    the command to its grant DM; ``steps``: the same split into the modal, the approver's ask and the grant.
    ``floor``: bench/slack_floor.py answers, which grants nothing to release."""

    def __init__(self, slack: FakeSlack, senders: list[SlackSender], *, users: int, concurrency: int,
                 floor: bool) -> None:
        self.slack, self.senders, self.users = slack, senders, users
        self.concurrency, self.floor = concurrency, floor
        self.durations: list[float] = []
        self.steps: dict[str, list[float]] = {"modal": [], "ask": [], "grant": []}
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._user_locks = [asyncio.Lock() for _ in range(users)]
        self._waiters: dict[str | None, list[asyncio.Future[None]]] = {}
        self._im: dict[str, str] = {}
        slack.listeners.append(self._on_call)

    def forget_timings(self) -> None:
        """Drop what was timed so far (the warm-up's flows)."""
        self.durations.clear()
        for values in self.steps.values():
            values.clear()

    async def run_flows(self, numbers: range) -> None:
        """Flows ``numbers``, ``concurrency`` at a time, each to its end."""
        for i in numbers:
            self._queue.put_nowait(i)
        await asyncio.gather(*(self._runner() for _ in range(self.concurrency)))

    async def _runner(self) -> None:
        while not self._queue.empty():
            await self._flow(self._queue.get_nowait())

    @staticmethod
    def _wake(futures: list[asyncio.Future[None]]) -> None:
        for waiter in futures:
            if not waiter.done():
                waiter.set_result(None)

    def _on_call(self, call: Any) -> None:
        channel = call.args.get("channel") if call.method.startswith("chat.") else None
        if channel is not None:
            self._wake(self._waiters.pop(channel, []))
            self._wake(self._waiters.pop(None, []))  # waits that watch everything
            return
        for futures in self._waiters.values():
            self._wake(futures)
        self._waiters.clear()

    async def _until(self, cond: object, *, watch: Any = (None,), timeout: float = 60.0) -> None:
        """Until ``cond()``; looked at again after each call on a channel in ``watch()`` (all: None)."""
        end = time.monotonic() + timeout
        while not cond():  # type: ignore[operator]
            waiter = asyncio.get_running_loop().create_future()
            for key in (watch() if callable(watch) else watch):
                self._waiters.setdefault(key, []).append(waiter)
            try:
                await asyncio.wait_for(waiter, timeout=max(0.0, end - time.monotonic()))
            except TimeoutError:
                if cond():  # type: ignore[operator]
                    return
                calls = [(c.method, c.status, str(c.response)[:120]) for c in self.slack.calls()][-8:]
                raise TimeoutError(f"flow step timed out; last Slack calls: {calls}") from None

    def _posted(self, user: str) -> list[Any]:
        """The bot's messages in its DM with ``user``, as the fake stores them (no copy: polled often)."""
        if user not in self._im:
            channel = self.slack.im_channel(user)
            if channel is None:
                return []
            self._im[user] = channel
        return self.slack.state.messages.get(self._im[user], [])

    def _dm_of(self, user: str) -> tuple[str | None, ...]:
        """The channels a post to ``user`` names: the user's ID, their DM once open (else: any call)."""
        return (user, self._im[user]) if user in self._im else (None,)

    async def _flow(self, i: int) -> None:
        slack, senders, posted, until = self.slack, self.senders, self._posted, self._until
        u = i % self.users
        user, email = f"U{u:04d}", f"u{u}@example.com"
        sender = senders[i % len(senders)]
        async with self._user_locks[u]:
            t0 = time.perf_counter()
            before_views = len(slack.modal_stack(user))
            granted_from = len(posted(user))
            await sender.command(user, "")
            await until(lambda: len(slack.modal_stack(user)) > before_views)
            t1 = time.perf_counter()
            self.steps["modal"].append(t1 - t0)
            view = slack.modal_stack(user)[-1]
            if ids.A_JUSTIFICATION not in str(view.blocks):
                raise RuntimeError(f"unexpected modal: {view.blocks}")
            lead = "UL1" if i % 2 else "UL2"
            asked_from = len(posted(lead))
            await sender.submit_view(user, view.id, {ids.A_JUSTIFICATION: f"flow {i}"})

            def ask() -> Any:
                # only the messages that arrived since the submission are looked at
                return next((m for m in posted(lead)[asked_from:] if f"from {email} " in m.text), None)

            await until(lambda: ask() is not None, watch=lambda: self._dm_of(lead))
            t2 = time.perf_counter()
            self.steps["ask"].append(t2 - t1)
            msg = ask()
            if ids.APPROVE not in str(msg.blocks) or f"<@{user}>" not in str(msg.blocks):
                raise RuntimeError(f"unexpected approval message: {msg.blocks}")
            await senders[(i + 1) % len(senders)].click(lead, slack.im_channel(lead), msg.ts, ids.APPROVE)
            await until(lambda: any("You now have" in m.text for m in posted(user)[granted_from:]),
                        watch=lambda: self._dm_of(user))
            self.durations.append(time.perf_counter() - t0)
            self.steps["grant"].append(time.perf_counter() - t2)
            if not self.floor:  # one grant of ``ops`` per person at a time: released before the user's next flow
                await self._release(user, granted_from)

    async def _release(self, user: str, granted_from: int) -> None:
        """Untimed: the user releases the access (its Release button) and the revocation is awaited."""
        granted = next(m for m in self._posted(user)[granted_from:] if "You now have" in m.text)
        ended_from = len(self._posted(user))
        await self.senders[0].click(user, self.slack.im_channel(user), granted.ts, ids.RELEASE)
        await self._until(lambda: any("has been revoked" in m.text for m in self._posted(user)[ended_from:]),
                          watch=lambda: self._dm_of(user))
