"""Log lines that outsiders can trigger, at most once per interval.

A client can make the node refuse its requests as fast as it can send them (bad handshakes,
invalid UTF-8, a flood of connections past the file-descriptor limit). One log line per
refusal would let it fill the disk and bury everything else; :class:`OncePerInterval` lets the
first line through at once and then one per interval, saying how many happened meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class OncePerInterval:
    """A gate for a recurring event's log line: open at most once per ``interval_s``."""

    __slots__ = ("_interval_s", "_clock", "_count", "_next_at")

    def __init__(self, *, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._clock = clock  # injected so tests step time instead of sleeping
        self._count = 0  # events since the last line (the one that opens the gate included)
        self._next_at = float("-inf")  # the gate stays shut before this

    def tick(self) -> int | None:
        """Count one event: how many happened since the last line if a line is due now, else None."""
        self._count += 1
        now = self._clock()
        if now < self._next_at:
            return None
        count, self._count = self._count, 0
        self._next_at = now + self._interval_s
        return count

    def log(self, logger: logging.Logger, level: int, message: str, *args: object) -> bool:
        """Count one event and log ``message % args`` if a line is due; True if logged."""
        count = self.tick()
        if count is None:
            return False
        logger.log(level, message + suffix(count), *args)
        return True


def suffix(count: int) -> str:
    """What a line gated by :class:`OncePerInterval` adds when it stands for more than one event."""
    return f" ({count} times since the last such line)" if count > 1 else ""
