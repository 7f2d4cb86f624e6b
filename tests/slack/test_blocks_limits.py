"""Every Block Kit builder stays within Slack's limits, whatever the text (property tests).

The limits are the fake Slack's (bot/fakes/blockkit.py, from Slack's Block Kit reference): a message or
view it refuses would be ``invalid_blocks`` / ``invalid_arguments`` at Slack — no modal, no message.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.domain.policy import Eligibility
from bot.fakes.blockkit import MAX_MESSAGE_BLOCKS, validate_blocks, validate_view
from bot.slack import app_home, blocks, modals, request_messages

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any text, short or very long (repeated), with line breaks, markup and astral characters in it.
_piece = st.text(min_size=1, max_size=12) | st.sampled_from(["\n", "<!channel>", "&", "*x*", "😀", "\u2028", ">"])
texts = st.builds(lambda parts, n: "".join(parts) * n, st.lists(_piece, max_size=8),
                  st.integers(min_value=1, max_value=400))
names = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,62}", fullmatch=True)
emails = st.builds(lambda a, b: f"{a}@{b}.example", st.text(min_size=1, max_size=300), st.text(max_size=20))
seconds = st.integers(min_value=1, max_value=3650 * 86400)
stamps = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                      timezones=st.just(UTC)).map(lambda d: d.isoformat())
request_ids = st.from_regex(r"R-[A-Z0-9]{8}", fullmatch=True)
outcomes = st.sampled_from(["Approved by ", "Denied by ", "Acknowledged by ", "Flagged by ", "Lapsed: "]).flatmap(
    lambda head: texts.map(lambda t: head + t))


@st.composite
def snaps(draw: st.DrawFn) -> dict[str, Any]:
    layers = draw(st.integers(min_value=1, max_value=3))
    return {"id": draw(request_ids), "requester": draw(emails), "requester_slack": draw(st.none() | st.just("U1X")),
            "submitted_by": draw(st.none() | emails), "submitted_by_slack": draw(st.none() | st.just("U2Y")),
            "eligibility": draw(names), "duration_s": draw(seconds), "ticket": draw(st.none() | texts),
            "starts_at": draw(st.none() | stamps), "expires_at": draw(st.none() | stamps), "layers": layers,
            "layer": draw(st.integers(min_value=1, max_value=layers)), "justification": draw(texts),
            "approvals": draw(st.lists(st.fixed_dictionaries({
                "approver": emails, "layer": st.integers(1, 3), "decision": st.sampled_from(["approve", "deny"])}),
                max_size=3))}


@st.composite
def eligibilities(draw: st.DrawFn) -> Eligibility:
    longest = timedelta(seconds=draw(seconds))
    layers = [{"approvers": {"groups": ["leads"]}} for _ in range(draw(st.integers(0, 3)))]
    glass = {"max_duration": longest} if draw(st.booleans()) else None
    return Eligibility.model_validate({
        "name": draw(names), "description": draw(texts), "connector": "demo", "target": {"group": draw(texts)},
        "requestors": {"groups": ["engineers"]}, "max_duration": longest, "approvals": layers,
        "require_ticket": draw(st.booleans()), "break_glass": glass})


def _message_ok(built: list[dict[str, Any]]) -> None:
    assert validate_blocks(built, max_blocks=MAX_MESSAGE_BLOCKS) == []


@SETTINGS
@given(st.text(max_size=300), st.integers(min_value=0, max_value=3000))
def test_cut_never_returns_more_than_its_limit(text: str, limit: int) -> None:
    cut = blocks.cut(text, limit)
    assert len(cut) <= limit
    assert cut == text or cut.endswith(blocks.TRUNCATED) or limit <= len(blocks.TRUNCATED)


@SETTINGS
@given(st.lists(eligibilities(), min_size=1, max_size=120, unique_by=lambda e: e.name), st.booleans(),
       st.data())
def test_the_request_modal_is_valid_for_any_policy(eligs: list[Eligibility], on_behalf: bool,
                                                   data: st.DataObject) -> None:
    selected = data.draw(st.sampled_from([e.name for e in eligs]))
    assert validate_view(modals.request_modal(eligs, selected, on_behalf=on_behalf)) == []
    assert validate_view(modals.request_modal([], None)) == []


@SETTINGS
@given(snaps(), st.none() | texts, outcomes)
def test_approval_and_review_messages_are_valid_for_any_request(snap: dict[str, Any], note: str | None,
                                                                outcome: str) -> None:
    _message_ok(request_messages.approval_message(snap, snap["layer"], note))
    _message_ok(request_messages.approval_decided(snap, snap["layer"], outcome))
    _message_ok(request_messages.review_message(snap, note))
    _message_ok(request_messages.review_decided(snap, outcome))
    _message_ok(request_messages.audit_root(snap))
    assert validate_view(modals.deny_modal(f"{snap['id']}:{snap['layer']}")) == []


@SETTINGS
@given(snaps(), st.sampled_from(["submitted", "approved", "active", "warning", "extended", "denied", "on_behalf",
                                 "revoked", "lapsed"]), texts)
def test_requester_notices_are_valid_for_any_text(snap: dict[str, Any], event: str, text: str) -> None:
    """The bot's sentence (never empty) with user text in it, however long (an on-behalf notice)."""
    _message_ok(request_messages.requester_notice(snap, event,
                                                  f"dave@example.com requested x for you ({snap['id']}): {text}"))


@SETTINGS
@given(st.lists(snaps(), max_size=20), st.lists(snaps(), max_size=20),
       st.lists(st.tuples(snaps(), st.integers(1, 3)), max_size=15, unique_by=lambda a: a[0]["id"]))
def test_app_home_is_valid_for_any_number_of_requests(active: list[dict[str, Any]], pending: list[dict[str, Any]],
                                                      approvals: list[tuple[dict[str, Any], int]]) -> None:
    assert validate_view(app_home.home_view(active=active, pending=pending, approvals=approvals)) == []


@SETTINGS
@given(st.fixed_dictionaries({"request": st.none() | snaps(), "actor": emails, "text": texts}))
def test_audit_lines_fit_a_section(payload: dict[str, Any]) -> None:
    assert len(request_messages.audit_text(payload)) <= 3000


@SETTINGS
@given(st.lists(texts, max_size=30), st.integers(min_value=20, max_value=5000))
def test_chunks_never_pass_their_limit(lines: list[str], limit: int) -> None:
    assert all(len(c) <= limit for c in blocks.chunks(lines, limit))
