"""The garbage collector of the long-running processes (``serve``, ``worker``), tuned once start-up is over.

CPython's cyclic collector runs every 700 net allocations and, every hundredth time, walks the whole
heap: everything start-up made (modules, the SQLAlchemy mappers and compiled statements, Bolt's
listeners, the policy) included, though none of it will ever be garbage. Under load that came to about
0.75 ms of CPU per flow in ``bench.throughput`` (7 % of the bot's time), with the full collections
stopping the event loop for 40–48 ms each (an ack waiting behind them).

After start-up, ``settle()`` collects once and freezes what is left (``gc.freeze``: those objects are
never examined again), then lets more allocations pass between collections. Cycles are still
collected — a request's ORM objects, a failed HTTP call's traceback — just in larger batches.
``JITBOT_GC=default`` (bot/settings.py) leaves the collector as Python sets it.
"""

from __future__ import annotations

import gc

# Net allocations between young collections, and young / middle collections between older ones.
THRESHOLDS = (5000, 10, 10)


def settle(choice: str) -> bool:
    """Freeze what start-up allocated and collect less often; False for ``default``.
    ``choice`` is the ``JITBOT_GC`` setting (read and validated at start by bot/settings.py)."""
    if choice == "default":
        return False
    if choice != "tuned":
        raise ValueError(f"JITBOT_GC must be tuned or default, not {choice!r}")
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    return True
