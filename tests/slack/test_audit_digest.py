"""The audit channel's digest: one line per request, every event in it, in order; its size known as it grows."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from slack_sdk.web.async_client import AsyncWebClient

from bot.fakes import FakeSlack
from bot.slack.audit_digest import Digest, digest_lines, fitting
from bot.slack.notifier import DIGEST_CHARS, SlackNotifier
from tests.conftest import DbFactory

TOKEN = "xoxb-digest"


def _line(rid: str | None, text: str, actor: str) -> dict[str, Any]:
    snap = {"id": rid, "eligibility": "prod-db", "requester": "alice@example.com"} if rid else None
    return {"request": snap, "event": "note", "actor": actor, "text": text}


def test_a_request_is_written_once_with_its_events_in_order() -> None:
    lines = digest_lines([
        _line("R-1", "requested prod-db for 1h", "alice@example.com"),
        _line("R-2", "requested prod-db for 2h", "bob@example.com"),
        _line("R-1", "approved at layer 1 of 1", "lead@example.com"),
        _line(None, "transition completed", "jitbot"),
        _line("R-1", "approved — granting access", "lead@example.com"),
        _line("R-1", "granted until 13:00 UTC", "jitbot"),
    ])
    assert lines == [
        "*R-1* prod-db for alice@example.com: requested prod-db for 1h _(by alice@example.com)_"
        " → approved at layer 1 of 1; approved — granting access _(by lead@example.com)_"
        " → granted until 13:00 UTC _(by jitbot)_",
        "*R-2* prod-db for alice@example.com: requested prod-db for 2h _(by bob@example.com)_",
        "transition completed _(by jitbot)_",
    ]


def test_user_text_in_a_digest_is_escaped() -> None:
    [line] = digest_lines([_line("R-1", "<!channel> see <https://evil|docs>", "mallory & co")])
    assert "<" not in line and ">" not in line.replace("→", "")
    assert "&lt;!channel&gt;" in line and "mallory &amp; co" in line


payloads = st.lists(st.builds(_line, st.sampled_from([None, "R-1", "R-2", "R-3"]),
                              st.text(min_size=0, max_size=40), st.sampled_from(["a", "b", "jitbot"])),
                    max_size=30)


@given(payloads)
def test_the_size_is_the_length_of_the_text_at_every_step(items: list[dict[str, Any]]) -> None:
    digest = Digest()
    for p in items:
        digest.add(p)
        assert digest.size == len("\n".join(digest.lines()))


@given(payloads, st.integers(20, 400))
def test_what_fits_is_the_longest_prefix_under_the_limit(items: list[dict[str, Any]], limit: int) -> None:
    n = fitting(items, limit)
    if not items:
        assert n == 0
        return
    assert n >= 1
    assert n == 1 or len("\n".join(digest_lines(items[:n]))) <= limit
    if n < len(items):
        assert len("\n".join(digest_lines(items[:n + 1]))) > limit


@given(payloads)
def test_every_event_is_in_the_digest_in_order_within_its_request(items: list[dict[str, Any]]) -> None:
    from bot.slack.blocks import esc
    lines = digest_lines(items)
    assert len(lines) == len({p["request"]["id"] for p in items if p["request"]}) \
        + sum(1 for p in items if not p["request"])
    for rid in ("R-1", "R-2", "R-3"):
        mine = [p for p in items if p["request"] and p["request"]["id"] == rid]
        if not mine:
            continue
        [line] = [ln for ln in lines if ln.startswith(f"*{rid}* ")]
        at = 0
        for p in mine:  # each event's text (and who did it) found after the previous one's
            found = line.find(esc(p["text"]), at)
            assert found >= 0
            at = found + len(esc(p["text"]))
        for actor in {p["actor"] for p in mine}:
            assert f"_(by {actor})_" in line


def test_the_slack_digest_fits_under_the_message_limit() -> None:
    notifier = SlackNotifier.__new__(SlackNotifier)
    lines = [_line(f"R-{n}", "x" * 990, "a") for n in range(100)]
    n = notifier.batch_fits("audit", lines)
    assert 30 <= n < 100
    assert len("\n".join(digest_lines(lines[:n]))) <= DIGEST_CHARS < len("\n".join(digest_lines(lines[:n + 1])))
    assert notifier.batch_fits("audit", lines[:5]) == 5
    # one request's events take less room than as many requests' (the head is written once)
    same = [_line("R-1", "x" * 990, "a") for _ in range(100)]
    assert notifier.batch_fits("audit", same) > n


async def test_a_digest_post_carries_each_request_once(db_factory: DbFactory) -> None:
    db = db_factory()
    await db.migrate()
    async with FakeSlack(token=TOKEN) as slack:
        slack.add_channel("C0AUDIT", "jit-audit")
        notifier = SlackNotifier(AsyncWebClient(token=TOKEN, base_url=slack.url), db, audit_channel="C0AUDIT")
        batch = [_line(f"R-{n % 3}", f"event {n}", "jitbot") for n in range(9)]
        await notifier.deliver_batch("audit", batch)
        [post] = slack.messages("C0AUDIT")
        assert post.text.splitlines() == [
            f"*R-{r}* prod-db for alice@example.com: event {r}; event {r + 3}; event {r + 6} _(by jitbot)_"
            for r in range(3)]
