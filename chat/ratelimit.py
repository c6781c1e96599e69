"""Token buckets (pure: the caller passes ``now``)."""

from __future__ import annotations

from collections.abc import Sequence


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    __slots__ = ("rate", "burst", "_tokens", "_stamp")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = now

    def wait_s(self, now: float, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens are there (0.0: now); spends nothing."""
        tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        return 0.0 if tokens >= cost else (cost - tokens) / self.rate

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

    def take(self, key: str, now: float, cost: float = 1.0) -> float:
        """Spend ``cost`` of ``key``'s tokens: 0.0 on success, else seconds until it would succeed."""
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.burst, now)
            if len(self._buckets) >= self._max_keys:
                # dicts keep insertion order and every hit re-inserts: the first key is the LRU one.
                del self._buckets[next(iter(self._buckets))]
        self._buckets[key] = bucket
        return bucket.take(now, cost)

    def wait_s(self, key: str, now: float, cost: float = 1.0) -> float:
        """Seconds until ``key`` has ``cost`` tokens (0.0: now); spends nothing."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0 if cost <= self.burst else (cost - self.burst) / self.rate
        return bucket.wait_s(now, cost)


class AddGuard:
    """Limits on adding *other* users to channels (pure: the caller passes ``now``).

    Without them anyone could add a user to unbounded numbers of rooms and groups and bury the
    user's real conversations. Each adder has a token bucket spent one token per user added
    (``per_adder_rate``/s sustained, ``per_adder_burst`` at once, so a full group can be created
    in one request); each added user has a budget of ``per_user_day`` memberships added by
    others, refilled at that many per day. Joining yourself costs nothing. Both are checked
    before anything is spent, so a refused request costs neither side anything.
    """

    DAY_S = 86_400.0

    def __init__(self, *, per_adder_rate: float, per_adder_burst: int, per_user_day: int, max_keys: int = 100_000) -> None:
        self._adders = KeyedLimiter(per_adder_rate, per_adder_burst, max_keys=max_keys)
        self._added = KeyedLimiter(per_user_day / self.DAY_S, per_user_day, max_keys=max_keys)

    @property
    def max_at_once(self) -> int:
        """The most users one request may add (the adder's burst)."""
        return self._adders.burst

    def check(self, adder: str, users: Sequence[str], now: float) -> tuple[float, str | None]:
        """``(0.0, None)`` if ``adder`` may add ``users`` now; else the seconds to wait and the
        user whose budget is spent (None: the adder's own rate)."""
        wait = self._adders.wait_s(adder, now, len(users))
        if wait:
            return wait, None
        for user in users:
            wait = self._added.wait_s(user, now)
            if wait:
                return wait, user
        return 0.0, None

    def spend(self, adder: str, users: Sequence[str], now: float) -> None:
        """Record that ``adder`` added ``users`` (after a :meth:`check` that passed)."""
        if users:
            self._adders.take(adder, now, len(users))
        for user in users:
            self._added.take(user, now)


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
