"""Event-loop lag: a timer that measures how late it fires.

Every ``interval_s`` a callback is due; how much later than due it actually runs is the time
the loop spent on something else without yielding (a long callback, a blocking call, CPU
saturation). One ``call_at`` per interval: no task, nothing on the hot path.
"""

from __future__ import annotations

import asyncio

from chat.metrics.counters import LAG_BUCKETS_S, Histogram

INTERVAL_S = 0.25


class LoopLag:
    """Observes the event loop's lateness into :attr:`histogram` while started."""

    def __init__(self, *, interval_s: float = INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.histogram = Histogram(LAG_BUCKETS_S)
        self.last_s = 0.0  # the latest lateness seen
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Start measuring on the running loop (idempotent)."""
        if self._handle is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._schedule(self._loop.time())

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self, now: float) -> None:
        assert self._loop is not None
        self._due = now + self.interval_s
        self._handle = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        late = max(0.0, now - self._due)
        self.last_s = late
        self.histogram.observe(late)
        self._schedule(now)
