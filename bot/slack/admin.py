"""``/jit admin …``: the JIT administrators' commands. Authorisation is the AdminService's."""

from __future__ import annotations

from bot.services.admin import AdminService
from bot.slack import blocks

USAGE = "Usage: `/jit admin pending`, `/jit admin revoke REQUEST`, `/jit admin retry REQUEST`."


async def admin_command(admin: AdminService, email: str, words: list[str]) -> str:
    """Run ``/jit admin WORDS…`` for ``email`` and return the ephemeral answer (PolicyViolation if refused)."""
    check = await admin.check_admin(email)  # non-admins learn nothing more, not even the usage
    answer = await _answer(admin, email, words)
    return answer if check.note is None else f"{answer}\n_(Note: {blocks.esc(check.note)}.)_"


async def _answer(admin: AdminService, email: str, words: list[str]) -> str:
    sub = words[0].lower() if words else ""
    if sub == "pending" and len(words) == 1:
        items = await admin.pending(actor=email)
        if not items:
            return "Nothing is waiting: no pending, approved, failed or unreviewed break-glass requests."
        lines = [f"• *{blocks.esc(i.request.id)}* {blocks.esc(i.request.eligibility)} for "
                 f"{blocks.esc(i.request.requester)} — {blocks.esc(i.why)}" for i in items]
        return blocks.cut("*Open requests*\n" + "\n".join(lines), 3000)
    if sub == "revoke" and len(words) == 2:
        request_id = words[1].upper()
        await admin.revoke(actor=email, request_id=request_id)
        return f"Revoking {request_id} now; the requester will be told."
    if sub == "retry" and len(words) == 2:
        request_id = words[1].upper()
        await admin.retry(actor=email, request_id=request_id)
        return f"Retrying the grant of {request_id}."
    return USAGE
