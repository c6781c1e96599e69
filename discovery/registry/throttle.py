"""When to write a node's load report (pure: states and an injected ``now`` in, delays out).

At most one write per ``interval_s``; reports in between are coalesced (the latest
value wins); a change of ``draining`` is written at once, because other nodes must stop
assigning to a draining node before its clients are sent elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

NEVER = float("-inf")


@dataclass(frozen=True, slots=True)
class Load:
    connections: int
    draining: bool


class ReportThrottle:
    def __init__(self, interval_s: float, written: Load) -> None:
        self.interval_s = interval_s
        self.written = written  # what the backend holds now
        self.wanted = written  # the latest report
        self.written_at = NEVER  # monotonic time of the last write

    def offer(self, load: Load, now: float) -> float | None:
        """Record a report; returns after how many seconds to write (0: now), or None if nothing changed."""
        self.wanted = load
        return self.due(now)

    def due(self, now: float) -> float | None:
        """Seconds until the wanted load should be written (0: now); None if already written."""
        if self.wanted == self.written:
            return None
        if self.wanted.draining != self.written.draining:
            return 0.0
        return max(0.0, self.written_at + self.interval_s - now)

    def done(self, load: Load, now: float) -> None:
        """``load`` is now durably in the backend."""
        self.written = load
        self.written_at = now
