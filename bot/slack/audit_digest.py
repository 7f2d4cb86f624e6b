"""An audit-channel digest: the lines that piled up while the lane waited, one line per request.

Slack takes about one post per second in a channel and 40,000 characters in a post, so a busy audit
channel carries at most one digest of ~39,000 characters a second. Written one line per event, every
line repeats its request's head (`*R-…* ops for alice@…:`) and most repeat the actor; at a few hundred
events a second the lane then fell behind the events. A digest therefore writes each request once, at
the place of its first event, with its events in order after the head; consecutive events by the same
actor share one `(by …)`:

    *R-7FVD2M5R* ops for u38@example.com: approved at layer 1 of 1; approved — granting access _(by lead2@…)_
      → granted until 01:00 UTC _(by jitbot)_            (one line in Slack; wrapped here)

Nothing is left out: every event's text is in the digest, in order within its request. Lines without a
request (a transition's summary) stay lines of their own. The order across requests is that of each
request's first event; the audit log (`jitbot audit`) keeps the exact order of everything.
"""

from __future__ import annotations

from typing import Any

from bot.slack.blocks import cut, esc

PART_CHARS = 2900  # one event's text, as a single audit line is cut at 3000 with its head
THEN = " → "
SAME_ACTOR = "; "


def _by(actor: str) -> str:
    return f" _(by {esc(actor)})_"


class Digest:
    """Built one payload at a time; ``size`` is the length of its lines joined by newlines, so far."""

    def __init__(self) -> None:
        self._lines: list[list[str]] = []  # a line's pieces: head, then event texts and actor tags
        self._last_actor: list[str | None] = []
        self._of_request: dict[str, int] = {}
        self.size = -1  # no line yet: the first one adds no newline

    def add(self, payload: dict[str, Any]) -> None:
        snap = payload.get("request") or {}
        text = cut(esc(payload.get("text") or payload.get("event", "")), PART_CHARS)
        actor = str(payload.get("actor", "jitbot"))
        n = self._of_request.get(snap["id"]) if snap else None
        if n is None:
            head = f"*{esc(snap.get('id', ''))}* {esc(snap.get('eligibility', ''))} for " \
                   f"{esc(snap.get('requester', ''))}: " if snap else ""
            if snap:
                self._of_request[snap["id"]] = len(self._lines)
            self._lines.append([head, text, _by(actor)])
            self._last_actor.append(actor)
            self.size += 1 + len(head) + len(text) + len(_by(actor))
            return
        pieces = self._lines[n]
        if self._last_actor[n] == actor:  # "…; next event _(by same)_": the tag moves to the end
            tag = pieces.pop()
            pieces += [SAME_ACTOR, text, tag]
            self.size += len(SAME_ACTOR) + len(text)
        else:
            pieces += [THEN, text, _by(actor)]
            self.size += len(THEN) + len(text) + len(_by(actor))
            self._last_actor[n] = actor

    def lines(self) -> list[str]:
        return ["".join(pieces) for pieces in self._lines]


def digest_lines(payloads: list[dict[str, Any]]) -> list[str]:
    digest = Digest()
    for p in payloads:
        digest.add(p)
    return digest.lines()


def fitting(payloads: list[dict[str, Any]], limit: int) -> int:
    """How many of ``payloads`` (from the first) make a digest of at most ``limit`` characters (≥ 1)."""
    digest = Digest()
    for n, p in enumerate(payloads):
        digest.add(p)
        if digest.size > limit:
            return max(n, 1)
    return len(payloads)
