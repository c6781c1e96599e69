"""When a failed webhook delivery is tried again, and when it is given up (pure).

Attempt ``n`` (1 for the first) failed: the next one waits
``min(cap_s, base_s × 2^(n-1))`` scaled by a jitter factor in ``[0.5, 1)`` ("equal jitter": the
wait never collapses to nothing, yet a crowd of notifications failing together spreads out
instead of hammering a recovering webhook in lockstep). A ``Retry-After`` from the receiver
(429/503) raises the wait to what it asked, still capped. A notification is given up after
``max_attempts`` failed attempts, or once it is ``max_age_ms`` old (counted from its message).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 15
    max_age_ms: int = 3_600_000
    base_s: float = 1.0  # the wait after the first failure (before jitter)
    cap_s: float = 300.0  # no wait is longer

    def delay_s(self, attempts: int, jitter: float, retry_after_s: float | None = None) -> float:
        """The wait after the ``attempts``-th failed attempt; ``jitter`` is uniform in ``[0, 1)``."""
        exponential = self.base_s * 2.0 ** min(max(attempts - 1, 0), 62)
        wait = min(self.cap_s, exponential) * (0.5 + min(max(jitter, 0.0), 1.0) / 2)
        if retry_after_s is not None and retry_after_s > wait:
            wait = min(self.cap_s, retry_after_s)
        return wait

    def expired(self, age_ms: int) -> bool:
        """Whether a notification this old is dropped rather than sent (or sent again)."""
        return age_ms >= self.max_age_ms

    def give_up(self, attempts: int, age_ms: int) -> str | None:
        """Why a notification that just failed its ``attempts``-th attempt is dropped, or None to retry."""
        if attempts >= self.max_attempts:
            return f"after {attempts} attempts"
        if self.expired(age_ms):
            return f"older than {self.max_age_ms // 1000} s"
        return None
