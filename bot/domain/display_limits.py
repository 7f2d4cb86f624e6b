"""What of a policy Slack cannot show in full, for ``jitbot policy validate`` to warn about.

The ``/jit`` menu is a ``static_select``: at most 100 options, each option's text and description at
most 75 characters (Slack's Block Kit reference, "Option object" and "Select menu element"; the same
limits as bot/fakes/blockkit.py enforces). The builders cut what is longer (bot/slack/blocks.py ``cut``),
visibly, so the modal still opens; these warnings say so before anyone sees a cut description.
"""

from __future__ import annotations

from bot.domain.policy import Policy

OPTION_TEXT = 75
MAX_OPTIONS = 100


def menu_description(elig_description: str, target_kind: str, target_ref: str) -> str:
    """What the ``/jit`` menu shows under an eligibility's name."""
    return elig_description or f"{target_kind} {target_ref}"


def display_warnings(policy: Policy) -> list[str]:
    """One line per eligibility field (or count) that the Slack menu would cut."""
    out: list[str] = []
    for e in policy.eligibilities:
        if len(e.name) > OPTION_TEXT:
            out.append(f"{e.name}: the name is {len(e.name)} characters; the /jit menu shows at most "
                       f"{OPTION_TEXT} (the rest is cut)")
        shown = menu_description(e.description, e.target.kind, e.target.ref)
        if len(shown) > OPTION_TEXT:
            what = "description" if e.description else "target (shown when there is no description)"
            out.append(f"{e.name}: the {what} is {len(shown)} characters; the /jit menu shows at most "
                       f"{OPTION_TEXT} (the rest is cut)")
    if len(policy.eligibilities) > MAX_OPTIONS:
        out.append(f"{len(policy.eligibilities)} eligibilities; the /jit menu lists at most {MAX_OPTIONS} "
                   "(a person eligible for more sees the first 100)")
    return out
