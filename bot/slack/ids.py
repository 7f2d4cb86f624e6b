"""Action ids, callback ids, block ids: one place, used where blocks are built and where listeners register."""

import re

COMMAND = "/jit"

# views (callback ids)
REQUEST_VIEW = "jit_request"
DENY_VIEW = "jit_deny"

# actions (action ids)
APPROVE = "jit_approve"
APPROVE_FOR = "jit_approve_for"  # Approve ▸ a shorter duration (value: request:layer:seconds)
DENY = "jit_deny_open"
RELEASE = "jit_release"
EXTEND = "jit_extend"
CANCEL = "jit_cancel"
OPEN_REQUEST = "jit_open_request"
REVIEW_ACK = "jit_breakglass_ack"
REVIEW_FLAG = "jit_breakglass_flag"
HOME_PAGE = "jit_home_page"  # App Home's previous / next page (value: the page number)

# input blocks of the request modal: (block_id, action_id)
B_ELIGIBILITY, A_ELIGIBILITY = "eligibility", "eligibility_select"
B_DURATION, A_DURATION = "duration", "duration_select"
B_DURATION_TEXT, A_DURATION_TEXT = "duration_text", "duration_text_input"  # a typed duration (replaces the select)
B_JUSTIFICATION, A_JUSTIFICATION = "justification", "justification_input"
B_TICKET, A_TICKET = "ticket", "ticket_input"
B_REASON, A_REASON = "reason", "reason_input"
B_BREAKGLASS, A_BREAKGLASS = "breakglass", "breakglass_checkbox"
B_ON_BEHALF, A_ON_BEHALF = "on_behalf", "on_behalf_user"
B_STARTS, A_STARTS = "starts_at", "starts_at_picker"
B_ALSO, A_ALSO = "also", "also_select"  # more eligibilities in the same request (bot/slack/multipick.py)

VIEWS = (REQUEST_VIEW, DENY_VIEW)
EVENTS = ("app_home_opened", "user_change", "team_join")
ACTIONS = (APPROVE, APPROVE_FOR, DENY, RELEASE, EXTEND, CANCEL, OPEN_REQUEST, A_ELIGIBILITY, REVIEW_ACK, REVIEW_FLAG,
           HOME_PAGE)


def nth(action_id: str, n: int) -> str:
    """The ``n``-th copy of a button in one view: Slack refuses a view that repeats an action_id."""
    return f"{action_id}.{n}"


def matching(action_id: str) -> re.Pattern[str]:
    """What a listener registers to receive ``action_id`` and its numbered copies (see ``nth``)."""
    return re.compile(rf"^{re.escape(action_id)}(\.\d+)?$")
