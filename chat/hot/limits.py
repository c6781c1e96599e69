"""Per-room rate limits and lanes. Pure: every call takes ``now`` (seconds, one monotonic clock).

**Per-room limits** (:class:`RoomLimiter`): one token bucket per room for sends, another
instance for joins, applied to hot rooms only (quiet rooms never reach them). A refusal is
``retry_after_ms``: the caller answers ``throttled`` and nothing was stored. The map is bounded
(least recently used room evicted) and the rate and burst may change at any time.

**Lanes** (:class:`Lanes`): storage work waits in one of three bounded FIFO lanes — bot bulk
posting (role ``bot``), hot-room writes, interactive chat — and a scheduler hands it out under
one statements/s budget. The lane to serve next is chosen by start-time fair queuing over the
lanes' weights: each lane's *start tag* is ``max(its last finish tag, the virtual time)``, the
lowest goes first (ties to interactive), and serving an item of cost ``c`` sets its lane's
finish tag to start + ``c / weight``. So, with every lane backlogged, the budget is shared in
proportion to the weights (interactive's weight is its guaranteed share); an idle lane's share
goes to the others; bots and hot rooms can also be capped at a share of the budget whatever is
idle. With unit costs and ``interactive_weight ≥ bot_weight``, interactive work waits behind at
most **one** bot item, whatever the bot backlog. A full lane refuses at :meth:`Lanes.offer`
with ``retry_after_ms`` (the time its backlog takes at its guaranteed share) — work is refused up front,
never accepted and then dropped.
"""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Generic, TypeVar

from chat.hot import retry_ms
from chat.ratelimit import TokenBucket

T = TypeVar("T")


class RoomLimiter:
    """A token bucket per room: ``per_s`` sustained, ``burst`` saved up (both dynamic)."""

    def __init__(self, *, per_s: float, burst: int, max_rooms: int = 10_000) -> None:
        self.per_s = per_s
        self.burst = burst
        self._max_rooms = max_rooms
        self._buckets: OrderedDict[int, TokenBucket] = OrderedDict()  # least recently used first

    def take(self, room: int, now: float, cost: float = 1.0) -> int | None:
        """None: go ahead. Else refused: retry after this many milliseconds."""
        bucket = self._buckets.get(room)
        if bucket is None:
            if len(self._buckets) >= self._max_rooms:
                self._buckets.popitem(last=False)
            bucket = self._buckets[room] = TokenBucket(self.per_s, self.burst, now)
        else:
            self._buckets.move_to_end(room)
            bucket.rate, bucket.burst = self.per_s, self.burst  # settings changed at run time apply at once
        wait_s = bucket.take(now, cost)
        return retry_ms(wait_s) if wait_s else None

    def forget(self, room: int) -> None:
        """The room cooled down: drop its bucket."""
        self._buckets.pop(room, None)


class Budget:
    """A token bucket that can be asked without spending (a scheduler chooses, then spends)."""

    __slots__ = ("rate", "burst", "_tokens", "_stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate  # tokens per second (> 0)
        self.burst = burst  # at most this many saved up
        self._tokens = burst
        self._stamp = now

    def wait(self, now: float, cost: float) -> float:
        """Seconds until ``cost`` tokens are there; 0.0: now. Spends nothing. A cost above the
        burst waits for a full bucket (else it would wait forever) and then runs into debt."""
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        need = min(cost, self.burst)
        # The tolerance: a caller woken at exactly the time this returned finds the tokens there.
        return 0.0 if self._tokens + 1e-9 >= need else (need - self._tokens) / self.rate

    def spend(self, cost: float) -> None:
        """Spend ``cost`` tokens (after :meth:`wait` said 0.0 at the same ``now``)."""
        self._tokens -= cost  # may go below zero (a cost above the burst): repaid before the next


class Lane(enum.IntEnum):
    INTERACTIVE = 0  # first: ties go to it
    HOT = 1
    BOT = 2


def lane_for(*, bot: bool, hot: bool) -> Lane:
    """The lane of a write: a bot's posting is bulk wherever it goes; else by the room."""
    return Lane.BOT if bot else Lane.HOT if hot else Lane.INTERACTIVE


@dataclass(frozen=True, slots=True)
class LaneConfig:
    """The storage budget and how the lanes share it (dynamic configuration)."""

    budget_per_s: float = 5000.0  # statements/s to storage, all lanes together
    burst_s: float = 0.1  # the budget may run this far ahead (burst = budget × burst_s, at least 1)
    interactive_weight: float = 6.0  # with every lane busy, interactive gets ≥ 6 / (6 + 3 + 1)
    hot_weight: float = 3.0
    bot_weight: float = 1.0
    hot_max_share: float = 0.6  # hot rooms never take more of the budget than this
    bot_max_share: float = 0.2  # nor bots
    interactive_queue: int = 2000  # items waiting per lane before offers are refused
    hot_queue: int = 5000
    bot_queue: int = 1000

    def __post_init__(self) -> None:
        if self.budget_per_s <= 0 or self.burst_s <= 0 or min(self.weights()) <= 0:
            raise ValueError("budget_per_s, burst_s and the weights must be > 0")
        if self.interactive_weight < self.bot_weight:
            raise ValueError("interactive_weight must be ≥ bot_weight (interactive waits behind one bot item at most)")
        if not (0 < self.hot_max_share <= 1 and 0 < self.bot_max_share <= 1):
            raise ValueError("max shares must be in (0, 1]")
        if min(self.queues()) < 1:
            raise ValueError("lane queues must hold ≥ 1 item")

    def weights(self) -> tuple[float, float, float]:
        return self.interactive_weight, self.hot_weight, self.bot_weight

    def queues(self) -> tuple[int, int, int]:
        return self.interactive_queue, self.hot_queue, self.bot_queue

    def caps(self) -> tuple[float | None, float | None, float | None]:
        """Each lane's cap in tokens/s (None: uncapped)."""
        return None, self.budget_per_s * self.hot_max_share, self.budget_per_s * self.bot_max_share


class Lanes(Generic[T]):
    """Three bounded lanes of work items ``T`` and their scheduler (see the module docstring)."""

    def __init__(self, config: LaneConfig | None = None, *, now: float) -> None:
        self._queues: tuple[deque[tuple[T, float]], ...] = (deque(), deque(), deque())  # (item, cost) per lane
        self._backlog = [0.0, 0.0, 0.0]  # cost queued per lane
        self._finish = [0.0, 0.0, 0.0]  # each lane's last finish tag
        self._vtime = 0.0  # the start tag of the last item served
        self._now = now  # the latest `now` seen: a cap created by a config change starts there
        self._config = config or LaneConfig()
        # Full at the start (a budget that starts empty would hold up the first burst).
        self._budget = Budget(self._config.budget_per_s, max(1.0, self._config.budget_per_s * self._config.burst_s), now)
        self._caps: list[Budget | None] = [None, None, None]
        self._weights = self._config.weights()
        self.config = self._config

    @property
    def config(self) -> LaneConfig:
        return self._config

    @config.setter
    def config(self, value: LaneConfig) -> None:
        self._config = value
        self._weights = value.weights()
        self._budget.rate, self._budget.burst = value.budget_per_s, max(1.0, value.budget_per_s * value.burst_s)
        for lane, rate in enumerate(value.caps()):
            cap = self._caps[lane]
            if rate is None:
                self._caps[lane] = None
            elif cap is None:
                self._caps[lane] = Budget(rate, max(1.0, rate * value.burst_s), self._now)
            else:
                cap.rate, cap.burst = rate, max(1.0, rate * value.burst_s)

    def queued(self, lane: Lane) -> int:
        return len(self._queues[lane])

    def offer(self, lane: Lane, item: T, now: float, cost: float = 1.0) -> int | None:
        """Queue ``item`` in ``lane``: None if taken (it will come out of :meth:`take`), else
        refused now (the lane is full): retry after this many milliseconds."""
        self._now = now
        queue = self._queues[lane]
        if len(queue) >= self._config.queues()[lane]:
            weights = self._weights
            share = weights[lane] / sum(weights)
            cap = self._config.caps()[lane]
            rate = min(self._config.budget_per_s * share, cap if cap is not None else float("inf"))
            return retry_ms(self._backlog[lane] / rate)
        queue.append((item, cost))
        self._backlog[lane] += cost
        return None

    def admit(self, lane: Lane, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` for ``lane`` at once if no lane has anything waiting and the budget (and
        the lane's cap) allow it now — an uncontended node's path: no item, no queueing, the same
        accounting as :meth:`take`. False: nothing spent, :meth:`offer` it."""
        self._now = now
        queues = self._queues
        if queues[0] or queues[1] or queues[2]:
            return False
        cap = self._caps[lane]
        if (cap is not None and cap.wait(now, cost) > 0) or self._budget.wait(now, cost) > 0:
            return False
        self._budget.spend(cost)
        if cap is not None:
            cap.spend(cost)
        start = max(self._finish[lane], self._vtime)
        self._finish[lane] = start + cost / self._weights[lane]
        self._vtime = start
        return True

    def take(self, now: float) -> tuple[Lane, T] | None:
        """The next item to do, if the budget allows one now; else None (see :meth:`next_at`)."""
        self._now = now
        best, best_start = -1, 0.0
        for lane in range(3):
            queue = self._queues[lane]
            if not queue:
                continue
            cap = self._caps[lane]
            if cap is not None and cap.wait(now, queue[0][1]) > 0:
                continue  # over its share: not eligible now
            start = max(self._finish[lane], self._vtime)
            if best < 0 or start < best_start:
                best, best_start = lane, start
        if best < 0:
            return None
        item, cost = self._queues[best][0]
        if self._budget.wait(now, cost) > 0:
            return None
        self._queues[best].popleft()
        self._backlog[best] -= cost
        self._budget.spend(cost)
        cap = self._caps[best]
        if cap is not None:
            cap.spend(cost)
        self._finish[best] = best_start + cost / self._weights[best]
        self._vtime = best_start
        return Lane(best), item

    def next_at(self, now: float) -> float | None:
        """No sooner than this may :meth:`take` return an item (None: every lane is empty).
        A lower bound: if take() still says None then, ask again."""
        waits = []
        for lane in range(3):
            queue = self._queues[lane]
            if queue:
                cap = self._caps[lane]
                cost = queue[0][1]
                waits.append(max(self._budget.wait(now, cost), cap.wait(now, cost) if cap is not None else 0.0))
        return now + min(waits) if waits else None
