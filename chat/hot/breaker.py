"""A circuit breaker per dependency (Cassandra, Redis): its health from error rate and latency,
and failing fast while it is down. Pure: every call takes ``now`` (seconds, one monotonic clock).

The caller asks :meth:`Breaker.allow` before each request to the dependency and reports every
request it made with :meth:`Breaker.record` (``ok`` False for an error or a timeout, and its
latency). Health, over a sliding window of ``window_s`` (ten buckets):

* **HEALTHY** — fewer than ``min_requests`` in the window, or error and slow ratios below the
  caution lines. A request is *slow* when it took ``slow_s`` or more.
* **CAUTION** — a ratio at or above its caution line; advisory (the caller may tighten budgets:
  every request is still allowed). It ends once both ratios are below caution × ``recover_ratio``
  (hysteresis), or the window holds fewer than ``min_requests``.
* **CRITICAL** — a ratio at or above its critical line. :meth:`allow` refuses at once with the
  ``retry_after_ms`` until ``open_s`` has passed; then it lets ``probes`` requests through (a
  *half-open round*) and refuses the rest until the round's verdict. All ``probes`` succeeding
  fast → HEALTHY with an empty window; one failing or slow → fail fast again for twice as long
  (at most ``max_open_s``); no verdict within ``probe_timeout_s`` counts as a failure. No
  request is admitted while CRITICAL except these probes.

**A stall.** Outcomes alone tell of a frozen dependency late: its requests wait for their
timeouts, and meanwhile the window is full of earlier successes. The caller, which sees the
requests in flight, reports them with :meth:`Breaker.stall`: when ``stall_requests`` requests
have been in flight for ``slow_s`` or more and the dependency answered nothing for ``slow_s``,
it turns CRITICAL at once.

While CRITICAL, results of requests admitted before it (a frozen dependency times out a whole
backlog) do not end or extend the fail-fast phase; during a round, a success counts as a probe
success whichever request it came from — the dependency just answered. :meth:`record` and
:meth:`poll` (call it every second or so: health also changes as the window empties) return the
:class:`Transition` when the health changes. :attr:`Breaker.config` may be replaced at run time.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from chat.hot import retry_ms

_BUCKETS = 10


class Health(enum.Enum):
    HEALTHY = "healthy"
    CAUTION = "caution"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """When a dependency counts as sick, and how it is probed (dynamic configuration)."""

    window_s: float = 10.0  # the sliding window the ratios are taken over
    min_requests: int = 20  # fewer requests in the window: no verdict (HEALTHY)
    slow_s: float = 1.0  # a request this slow counts as slow
    caution_error_ratio: float = 0.05
    critical_error_ratio: float = 0.5
    caution_slow_ratio: float = 0.2
    critical_slow_ratio: float = 0.8
    recover_ratio: float = 0.5  # CAUTION ends below caution × this
    open_s: float = 2.0  # CRITICAL fails fast this long before the first probe round
    max_open_s: float = 30.0  # … doubling after each failed round up to this
    probes: int = 3  # requests let through per round; all must succeed fast
    probe_timeout_s: float = 5.0  # a round with no verdict after this has failed
    stall_requests: int = 3  # this many in flight past slow_s, and no answer for slow_s: CRITICAL at once

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.slow_s <= 0 or self.open_s <= 0 or self.probe_timeout_s <= 0:
            raise ValueError("window_s, slow_s, open_s and probe_timeout_s must be > 0")
        if self.min_requests < 1 or self.probes < 1 or self.stall_requests < 1 or self.max_open_s < self.open_s:
            raise ValueError("min_requests, probes and stall_requests must be ≥ 1, max_open_s ≥ open_s")
        if not (0 < self.caution_error_ratio <= self.critical_error_ratio <= 1 and 0 < self.caution_slow_ratio <= self.critical_slow_ratio <= 1):
            raise ValueError("ratios must satisfy 0 < caution ≤ critical ≤ 1")
        if not 0 < self.recover_ratio <= 1:
            raise ValueError("recover_ratio must be in (0, 1]")


class Transition(NamedTuple):
    dependency: str
    old: Health
    new: Health
    at: float
    error_ratio: float  # over the window when it changed
    slow_ratio: float


class Breaker:
    """One dependency's health (see the module docstring)."""

    def __init__(self, dependency: str, config: BreakerConfig | None = None) -> None:
        self.dependency = dependency  # named in transitions, logs and metrics
        self._config = config or BreakerConfig()
        self.health = Health.HEALTHY
        # The window: per bucket, requests, errors and slow ones; and their sums.
        self._width = self._config.window_s / _BUCKETS
        self._index = -_BUCKETS  # bucket of the newest record (-_BUCKETS: none yet, nothing to expire)
        self._clear()
        # CRITICAL: fail fast until `open_until`, then a round of probes started at `_round`.
        self.open_until = 0.0
        self._open_for = self._config.open_s  # the next fail-fast span (doubles per failed round)
        self._round: float | None = None
        self._probes_left = 0
        self._probes_ok = 0
        self.refused = 0  # requests refused by fail-fast, for metrics

    @property
    def config(self) -> BreakerConfig:
        return self._config

    @config.setter
    def config(self, value: BreakerConfig) -> None:
        if value.window_s != self._config.window_s:
            self._width = value.window_s / _BUCKETS
            self._clear()
            self._index = -_BUCKETS  # bucket numbers of the old width mean nothing now
        if self.health is not Health.CRITICAL:
            self._open_for = value.open_s  # the next fail-fast span starts from the new setting
        self._config = value

    def allow(self, now: float) -> int | None:
        """None: make the request (and :meth:`record` it). Else refuse it: retry after this many ms."""
        if self.health is not Health.CRITICAL:
            return None
        if now < self.open_until:
            self.refused += 1
            return retry_ms(self.open_until - now)
        timeout = self._config.probe_timeout_s
        if self._round is not None and now - self._round >= timeout:
            self._reopen(now)  # the round never reached a verdict: its probes hang
            self.refused += 1
            return retry_ms(self.open_until - now)
        if self._round is None:
            self._round, self._probes_left, self._probes_ok = now, self._config.probes, 0
        if self._probes_left > 0:
            self._probes_left -= 1
            return None
        self.refused += 1
        return retry_ms(self._round + timeout - now)

    def record(self, now: float, ok: bool, latency_s: float) -> Transition | None:
        """One request's outcome. Returns the health transition it caused, if any."""
        slow = latency_s >= self._config.slow_s
        self._advance(now)
        slot = self._index % _BUCKETS
        self._requests[slot] += 1
        self._errors[slot] += not ok
        self._slow[slot] += slow
        self._sums[0] += 1
        self._sums[1] += not ok
        self._sums[2] += slow
        if self.health is not Health.CRITICAL:
            return self._judge(now)
        if self._round is None:
            return None  # the fail-fast phase: an old request's outcome
        if not ok or slow:
            self._reopen(now)
            return None
        self._probes_ok += 1
        if self._probes_ok < self._config.probes:
            return None
        self._clear()  # the errors that tripped it are history
        self._open_for = self._config.open_s
        self._round = None
        return self._move(Health.HEALTHY, now)

    def stall(self, now: float, waiting: int, silent_s: float) -> Transition | None:
        """``waiting`` requests have been in flight for ``slow_s`` or more, and the dependency
        answered nothing for ``silent_s``: CRITICAL now if that is a stall (see the module docstring)."""
        c = self._config
        if self.health is Health.CRITICAL or waiting < c.stall_requests or silent_s < c.slow_s:
            return None
        self.open_until, self._round = now + self._open_for, None
        return self._move(Health.CRITICAL, now)

    def poll(self, now: float) -> Transition | None:
        """Re-judge as the window slides (a dependency nobody calls drifts back to HEALTHY)."""
        if self.health is Health.CRITICAL:
            return None
        self._advance(now)
        return self._judge(now)

    def ratios(self) -> tuple[float, float]:
        """(error ratio, slow ratio) over the window as of the last record or poll."""
        requests, errors, slow = self._sums
        return (errors / requests, slow / requests) if requests else (0.0, 0.0)

    def _judge(self, now: float) -> Transition | None:
        c = self._config
        errors, slow = self.ratios()
        line = c.recover_ratio if self.health is Health.CAUTION else 1.0  # hysteresis: CAUTION ends lower
        if self._sums[0] < c.min_requests:
            target = Health.HEALTHY
        elif errors >= c.critical_error_ratio or slow >= c.critical_slow_ratio:
            target = Health.CRITICAL
        elif errors >= c.caution_error_ratio * line or slow >= c.caution_slow_ratio * line:
            target = Health.CAUTION
        else:
            target = Health.HEALTHY
        if target is Health.CRITICAL:
            self.open_until, self._round = now + self._open_for, None
        return self._move(target, now) if target is not self.health else None

    def _reopen(self, now: float) -> None:
        """A failed round: fail fast again, for twice as long as last time (capped)."""
        self._open_for = min(self._open_for * 2, self._config.max_open_s)
        self.open_until, self._round = now + self._open_for, None

    def _move(self, health: Health, now: float) -> Transition:
        old, self.health = self.health, health
        return Transition(self.dependency, old, health, now, *self.ratios())

    def _advance(self, now: float) -> None:
        """Slide the window to ``now``: empty the buckets it passed."""
        index = int(now / self._width)
        for i in range(self._index + 1, min(index, self._index + _BUCKETS) + 1):
            slot = i % _BUCKETS
            self._sums[0] -= self._requests[slot]
            self._sums[1] -= self._errors[slot]
            self._sums[2] -= self._slow[slot]
            self._requests[slot] = self._errors[slot] = self._slow[slot] = 0
        self._index = max(index, self._index)

    def _clear(self) -> None:
        # Parallel lists indexed by bucket (the hot path touches three ints, not an object).
        self._requests = [0] * _BUCKETS
        self._errors = [0] * _BUCKETS
        self._slow = [0] * _BUCKETS
        self._sums = [0, 0, 0]
