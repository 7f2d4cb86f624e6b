"""Interactive payloads decoded in C (bot/slack/request_body.py): the same dict Bolt's parser gives,
and the signature still checked on the raw body."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, unquote_plus, urlencode

from hypothesis import given, settings
from hypothesis import strategies as st
from slack_bolt.request.internals import parse_body
from sqlalchemy import func, select

from bot.services.clock import ManualClock
from bot.slack import ids
from bot.slack.request_body import _unquote, payload_of
from storage.tables import AccessRequest
from tests.conftest import DbFactory
from tests.slack.harness import slack_env

FORM = "application/x-www-form-urlencoded"
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                           max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(), json_values, min_size=1, max_size=5))
def test_a_payload_decodes_to_what_bolt_decodes(payload: dict[str, Any]) -> None:
    text = json.dumps(payload, ensure_ascii=False)
    raw = urlencode({"payload": text})
    assert parse_body(raw, FORM) == payload
    assert payload_of(raw) == (None if "%" in text else payload)  # with a literal %: Bolt's parse


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("%+ab2BeEfF03Cé✓&=")), max_size=40))
def test_the_decoder_matches_urllib_wherever_it_is_used(text: str) -> None:
    """``payload_of`` uses the C decoder's result only when it holds no "%": a literal one (rare) or an
    escape left undecoded (invalid UTF-8, which urllib replaces) goes to Bolt's parser."""
    decoded = _unquote(text.replace("+", "%20"))
    assert "%" in decoded or decoded == unquote_plus(text)
    raw = "payload=" + quote(json.dumps({"t": text}))  # as Slack would send that text
    assert payload_of(raw) in (None, parse_body(raw, FORM))


def test_other_bodies_are_left_to_bolt() -> None:
    assert payload_of("payload=" + quote(json.dumps({"t": "50% off"}))) is None  # a literal %
    assert payload_of("command=%2Fjit&text=") is None  # a slash command: several fields
    assert payload_of("payload=" + quote(json.dumps({"a": 1})) + "&extra=1") is None
    assert payload_of("payload=" + quote("[1, 2]")) is None  # not an object


async def test_a_payload_with_a_bad_signature_is_refused_and_changes_nothing(
        db_factory: DbFactory, policy_text: str, clock: ManualClock) -> None:
    async with slack_env(db_factory(), policy_text, clock) as env:
        await env.sender.command("U1ALICE", "")
        modal = env.slack.modal_stack("U1ALICE")[-1]
        values = {ids.A_JUSTIFICATION: "deploy", ids.A_TICKET: "OPS-1"}
        refused = await env.sender.submit_view("U1ALICE", modal.id, values, secret="wrong-secret")
        assert refused.status == 401
        async with env.stack.rt.db.sessions() as s:
            assert (await s.execute(select(func.count()).select_from(AccessRequest))).scalar() == 0
        accepted = await env.sender.submit_view("U1ALICE", modal.id, values)
        assert accepted.status == 200
        async with env.stack.rt.db.sessions() as s:
            assert (await s.execute(select(func.count()).select_from(AccessRequest))).scalar() == 1
