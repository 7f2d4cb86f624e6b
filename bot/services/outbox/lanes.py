"""The outbox's lanes: order keys of one channel's posts (``lane:…``), delivered one chain at a time.

Every lane is declared in ``LANES``: the claim pass looks at each declared lane's head by its key
(``sql.WAITING_LANES``), and the claims of other keys leave every ``lane:`` key alone, so a message of an
undeclared lane would never be delivered — ``enqueue`` refuses it.
"""

from __future__ import annotations

AUDIT_LANE = "lane:audit"  # the audit channel's lines (bot/services/notices.py)
LANES = (AUDIT_LANE,)


def is_lane(order_key: str) -> bool:
    return order_key.startswith("lane:")
