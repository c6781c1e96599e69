"""Token buckets (pure: the caller passes ``now``)."""

from __future__ import annotations


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    __slots__ = ("rate", "burst", "_tokens", "_stamp")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = now

    def take(self, now: float, cost: float = 1.0) -> float:
        """Spend ``cost`` tokens. Returns 0.0 on success, else seconds until it would succeed."""
        tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if tokens >= cost:
            self._tokens = tokens - cost
            return 0.0
        self._tokens = tokens
        return (cost - tokens) / self.rate


class KeyedLimiter:
    """One bucket per key (user), for the HTTP API; the least recently used keys are evicted."""

    def __init__(self, rate: float, burst: int, *, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self._max_keys = max_keys
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key: str, now: float) -> float:
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.burst, now)
            if len(self._buckets) >= self._max_keys:
                # dicts keep insertion order and every hit re-inserts: the first key is the LRU one.
                del self._buckets[next(iter(self._buckets))]
        self._buckets[key] = bucket
        return bucket.take(now)


class FrameGuard:
    """One socket's abuse policy (pure): a rate limit on frames, and strikes that end in a close.

    ``admit`` refuses frames beyond the token bucket; ``flood_strikes`` refusals in a row mean
    the client ignores ``rate_limited`` and must be closed (1008). ``oversize_strikes``
    ``too_large`` refusals mean it keeps sending what can never be accepted (1009).
    """

    __slots__ = ("_bucket", "_flood_strikes", "_oversize_strikes", "_refused", "_oversize")

    def __init__(self, *, rate: float, burst: int, flood_strikes: int, oversize_strikes: int, now: float) -> None:
        self._bucket = TokenBucket(rate, burst, now)
        self._flood_strikes = flood_strikes
        self._oversize_strikes = oversize_strikes
        self._refused = 0  # rate-limited frames in a row
        self._oversize = 0  # too_large refusals so far

    def admit(self, now: float) -> float:
        """0.0: handle the frame. Otherwise refuse it; retry after this many seconds."""
        wait_s = self._bucket.take(now)
        self._refused = self._refused + 1 if wait_s else 0
        return wait_s

    @property
    def flooding(self) -> bool:
        """The client kept sending through its refusals: close it."""
        return self._refused >= self._flood_strikes

    def too_large(self) -> bool:
        """Count one ``too_large`` refusal; True once the client should be closed."""
        self._oversize += 1
        return self._oversize >= self._oversize_strikes
