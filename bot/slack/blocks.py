"""Block Kit's parts, built by pure functions from plain values (no I/O): user text made safe for mrkdwn
(``esc``, ``quoted``, ``notice``), cut visibly to Slack's limits (``cut``, ``chunks``), and the elements
every view and message is made of. The views and messages themselves: ``modals.py``, ``request_messages.py``
(a request's messages), ``app_home.py`` (App Home, ``/jit list``, ``/jit help``).

Limits kept by the builders (Slack's documented maxima): section text 3000, field 2000, header 150, button 75,
option text 75, static_select 100 options, modal title 24, ≤100 blocks per view, ≤50 per message.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

Block = dict[str, Any]


def esc(text: str | None) -> str:
    """Escape user text for mrkdwn so it cannot mention people, @channel, or forge links."""
    return (text or "").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def quoted(text: str | None) -> str:
    """User text as a block quote, escaped, every line of it (whatever breaks the line: ``\\r``, U+2028
    …): no line of it can pass for one of the bot's own fields."""
    return "\n".join(">" + line for line in _unanchored(esc(text)).splitlines() or [""])


def _unanchored(text: str) -> str:
    """User text never carries the name of jitbot's audit anchors (bot/services/auditing/audit_anchor.py): a line of
    it copied from the audit channel must not pass for an anchor (non-breaking hyphens instead)."""
    return text.replace("jitbot-audit-anchor", "jitbot\u2011audit\u2011anchor")


def notice(text: str | None) -> str:
    """A text of the bot's own that may end in user text (a reason, a justification): escaped; its first
    line is the bot's sentence, and every further line can only have come from the user, so it is quoted."""
    first, *rest = esc(text).splitlines() or [""]
    return "\n".join([first, *(">" + line for line in rest)])


TRUNCATED = " …(truncated)"


def cut(text: str, limit: int) -> str:
    """Truncate visibly, never past Slack's limit: at most ``limit`` characters."""
    if len(text) <= limit:
        return text
    return text[: limit - len(TRUNCATED)] + TRUNCATED if limit > len(TRUNCATED) else text[:limit]


def chunks(lines: list[str], limit: int) -> list[str]:
    """The lines joined by newlines into as few texts of at most ``limit`` characters as they fit in."""
    out: list[str] = []
    current = ""
    for line in lines:
        line = cut(line, limit)
        if current and len(current) + 1 + len(line) > limit:
            out.append(current)
            current = ""
        current = f"{current}\n{line}" if current else line
    if current:
        out.append(current)
    return out


def plain(text: str, limit: int = 75) -> dict[str, Any]:
    return {"type": "plain_text", "text": cut(text, limit), "emoji": True}


def md(text: str, limit: int = 3000) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": cut(text, limit)}


def section(text: str) -> Block:
    return {"type": "section", "text": md(text)}


def context(text: str) -> Block:
    return {"type": "context", "elements": [md(text, 2000)]}


def button(text: str, action_id: str, value: str, style: str | None = None,
           confirm: dict[str, Any] | None = None) -> dict[str, Any]:
    b: dict[str, Any] = {"type": "button", "text": plain(text), "action_id": action_id, "value": value}
    if style:
        b["style"] = style
    if confirm:
        b["confirm"] = confirm
    return b


def who(email: str, slack_id: str | None) -> str:
    return f"<@{slack_id}>" if slack_id else esc(email)


def when(iso: str | None) -> str:
    if not iso:
        return "—"
    at = datetime.fromisoformat(iso)
    return f"<!date^{int(at.timestamp())}^{{date_short_pretty}} {{time}}|{at:%Y-%m-%d %H:%M} UTC>"
