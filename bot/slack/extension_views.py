"""How an extension request (``extension.reapproval``: more time on active access, approved again) shows
to its approvers and in the audit channel. Pure; nothing here is user-written (ids, durations, times)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from bot.domain.durations import format_duration
from bot.domain.requests import EXTENSION


def is_extension(snap: dict[str, Any]) -> bool:
    return snap.get("kind") == EXTENSION and bool(snap.get("parent_id"))


def title(snap: dict[str, Any]) -> str:
    """The message header: an access request, or an extension of one."""
    if is_extension(snap):
        return f"Extension request {snap['id']} (of {snap['parent_id']})"
    return f"Access request {snap['id']}"


def summary(snap: dict[str, Any]) -> str | None:
    """For an extension: what it extends, by how much, and until when the access runs without it."""
    if not is_extension(snap):
        return None
    extra = format_duration(timedelta(seconds=int(snap["duration_s"])))
    text = (f":hourglass_flowing_sand: *Extension of {snap['parent_id']}* by *{extra}* more, beyond the "
            "eligibility's maximum: approving it extends access that is already active.")
    until = ((snap.get("context") or {}).get("extends") or {}).get("until")
    if isinstance(until, str):
        at = datetime.fromisoformat(until)
        text += (f" Without approval it ends <!date^{int(at.timestamp())}^{{date_short_pretty}} {{time}}|"
                 f"{at:%Y-%m-%d %H:%M} UTC>, and this request lapses then.")
    return text


def home_prefix(snap: dict[str, Any]) -> str:
    """App Home's line for an approval: ``extension of R-… `` before the duration."""
    return f"extension of {snap['parent_id']} by " if is_extension(snap) else ""
