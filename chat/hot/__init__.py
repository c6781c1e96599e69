"""Hot-room protection, pure building blocks (issue 9): each module takes ``now`` and decides;
none awaits, does I/O or imports a driver. The message path, the hub and the ops API call them.

* :mod:`chat.hot.detector` — which rooms are hot (local rates, cluster aggregation, hysteresis, pins)
* :mod:`chat.hot.breaker` — per-dependency health (HEALTHY / CAUTION / CRITICAL) and failing fast
* :mod:`chat.hot.waiting_room` — joins over a room's join budget queue and are admitted in order
* :mod:`chat.hot.limits` — per-room send/join limits, and lanes (bot / hot / interactive) under a budget
* :mod:`chat.hot.batcher` — per-partition storage write batches under a statements/s budget
* :mod:`chat.hot.coalescer` — a hot room's live messages gathered into ``messages`` batch frames

Clock convention, everywhere: ``now`` is seconds as a float from one monotonic clock
(``time.monotonic()`` in production, plain numbers in tests); waits handed to clients are
``retry_after_ms`` as an int (at least 1).
"""

from __future__ import annotations

import math


def retry_ms(wait_s: float) -> int:
    """A wait in seconds as the protocol's ``retry_after_ms``: rounded up, at least 1 ms
    (0 would tell a client to retry at once, which is never what a refusal means)."""
    return max(1, math.ceil(wait_s * 1000))
