"""How an extension request shows: approvers see what it extends, by how much, and when the access
ends without it; App Home and the audit channel say it is an extension (bot/slack/extension_views.py)."""

from __future__ import annotations

from typing import Any

from bot.fakes.blockkit import MAX_MESSAGE_BLOCKS, validate_blocks, validate_view
from bot.slack import app_home, ids, request_messages


def _snap(**over: Any) -> dict[str, Any]:
    snap: dict[str, Any] = {
            "id": "R-EXT00001", "kind": "extension", "parent_id": "R-ORIG0001", "eligibility": "prod-admin",
            "description": "", "target": "group prod-admins", "requester": "alice@example.com",
            "requester_slack": "U1ALICE", "submitted_by": None, "submitted_by_slack": None, "starts_at": None,
            "duration_s": 7200, "justification": "deploy <!channel>", "ticket": "OPS-1", "status": "pending",
            "layer": 1, "layers": 2, "created_at": "2026-01-05T09:00:00+00:00", "approvals": [],
            "expires_at": None, "granted_at": None,
            "context": {"extends": {"request": "R-ORIG0001", "until": "2026-01-05T17:00:00+00:00"}}}
    return {**snap, **over}


def test_the_approver_sees_an_extension_of_the_request_with_the_extra_time_and_the_end_without_it() -> None:
    msg = request_messages.approval_message(_snap(), 1)
    assert validate_blocks(msg, max_blocks=MAX_MESSAGE_BLOCKS) == []
    text = str(msg)
    assert "Extension request R-EXT00001 (of R-ORIG0001)" in text
    assert "*Extension of R-ORIG0001* by *2h* more" in text and "2026-01-05 17:00 UTC" in text
    assert "<!channel>" not in text  # the justification stays quoted
    assert any(e.get("action_id") == ids.APPROVE for b in msg if b["type"] == "actions" for e in b["elements"])
    decided = str(request_messages.approval_decided(_snap(), 1, "Approved by bob@example.com"))
    assert "Extension request R-EXT00001 (of R-ORIG0001)" in decided


def test_an_access_request_still_reads_as_one() -> None:
    plain = _snap(kind="access", parent_id=None, context=None)
    assert "Access request R-EXT00001" in str(request_messages.approval_message(plain, 1))
    assert "Extension" not in str(request_messages.approval_message(plain, 1))
    assert "requests *prod-admin* for 2h" in str(request_messages.audit_root(plain))


def test_app_home_and_the_audit_root_name_the_extension() -> None:
    assert "asks to extend R-ORIG0001 (*prod-admin*) by 2h" in str(request_messages.audit_root(_snap()))
    view = app_home.home_view(active=[], pending=[], approvals=[(_snap(), 1)])
    assert validate_view(view) == []
    assert "extension of R-ORIG0001 by 2h" in str(view)


def test_app_home_offers_extend_for_each_active_grant_but_break_glass() -> None:
    active = [_snap(id="R-A", kind="access", expires_at="2026-01-05T17:00:00+00:00"),
              _snap(id="R-B", kind="breakglass", expires_at="2026-01-05T17:00:00+00:00")]
    view = app_home.home_view(active=active, pending=[], approvals=[])
    assert validate_view(view) == []
    extends = [e["value"] for b in view["blocks"] if b["type"] == "actions" for e in b["elements"]
               if e["action_id"].startswith(ids.EXTEND)]
    assert extends == ["R-A"]


def test_the_approval_email_says_it_is_an_extension() -> None:
    from bot.notify.render import render

    mail = render("approval_request", {"request": _snap(), "layer": 1, "approver": "bob@example.com"})
    assert mail is not None
    assert "alice@example.com asks to extend R-ORIG0001 by 2h, beyond the access's maximum" in str(mail)
