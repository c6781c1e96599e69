"""Storage writes of hot rooms gathered into one batch per partition, under a statements/s
budget. Pure: every call takes ``now`` (seconds, one monotonic clock); the caller writes.

A hot room's messages all land in one Cassandra partition (``(channel, bucket)``), so writing
them one statement each is the load that hurts. Instead each message is :meth:`Batcher.offer`-ed
with the partition it belongs to, an opaque ``item`` (what to write) and an opaque ``handle``
(what to resolve afterwards, e.g. the sender's future). The writer loop calls :meth:`due`, writes
each returned :class:`Batch` as one unlogged batch (single partition: cheap for Cassandra),
calls :meth:`done`, then resolves the batch's handles — success: each message is durable and
may be acked; failure: each send fails with ``unavailable``, and as none was acked, nothing
acked is lost. The ack still follows the durable write.

* **Bounded by size and by age.** :meth:`offer` refuses up front, with ``retry_after_ms``, when
  the partition already holds ``max_queue`` items, when ``max_items`` are queued or in flight in
  all, when ``max_partitions`` partitions are in use, or when the partition's oldest item has
  waited ``max_age_s`` (the writer is behind: a new item would only wait longer). An accepted item
  is never dropped: it comes out of :meth:`due` in exactly one batch.
* **When a partition flushes.** When it holds ``max_batch`` items or ``max_batch_bytes``, or its
  oldest item has waited ``linger_s`` (the gathering window). A batch takes items in arrival
  order, at most ``max_batch`` and ``max_batch_bytes`` (but at least one). At most
  ``max_inflight`` batches of one partition are written at a time.
* **Budget.** Each batch costs one statement from a token bucket of ``statements_per_s``; when
  several partitions are due, the one whose oldest item waited longest goes first. While the
  budget allows, no item waits longer than ``linger_s`` plus the caller's polling delay.

:meth:`due` also returns when to call it next; call it again after :meth:`done` as well (a
partition at its in-flight limit becomes due then). The config may be replaced at run time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from chat.hot import retry_ms
from chat.hot.limits import Budget

Item = TypeVar("Item")  # what to write (opaque here)
Handle = TypeVar("Handle")  # what to resolve after the write (opaque here)


@dataclass(frozen=True, slots=True)
class BatcherConfig:
    """Batching and its budget (dynamic configuration)."""

    linger_s: float = 0.02  # how long the oldest item waits for company
    max_batch: int = 50  # items per batch
    max_batch_bytes: int = 48 * 1024  # Cassandra fails batches over 50 KiB by default
    statements_per_s: float = 500.0  # batches written per second, all partitions together
    burst_s: float = 0.1  # the budget may run this far ahead (at least one statement)
    max_inflight: int = 2  # batches of one partition being written at once
    max_queue: int = 2000  # items queued per partition
    max_items: int = 20_000  # items queued or in flight, all partitions
    max_partitions: int = 1000
    max_age_s: float = 2.0  # refuse new items while a partition's oldest has waited this long

    def __post_init__(self) -> None:
        if self.linger_s < 0 or self.statements_per_s <= 0 or self.burst_s <= 0 or self.max_age_s <= 0:
            raise ValueError("linger_s must be ≥ 0; statements_per_s, burst_s and max_age_s > 0")
        if min(self.max_batch, self.max_batch_bytes, self.max_inflight, self.max_queue, self.max_items, self.max_partitions) < 1:
            raise ValueError("sizes and counts must be ≥ 1")


@dataclass(slots=True)
class Batch(Generic[Item, Handle]):
    """Items of one partition to write together; resolve ``handles`` (same order) afterwards."""

    partition: Hashable
    items: list[Item] = field(default_factory=list)
    handles: list[Handle] = field(default_factory=list)
    size: int = 0  # bytes, as offered
    oldest: float = 0.0  # when its first item was offered


class _Queue(Generic[Item, Handle]):
    __slots__ = ("entries", "size", "inflight")

    def __init__(self) -> None:
        self.entries: deque[tuple[Item, Handle, float, int]] = deque()  # (item, handle, offered at, size)
        self.size = 0  # bytes queued
        self.inflight = 0  # batches being written


class Batcher(Generic[Item, Handle]):
    """Per-partition write queues and their flush decisions (see the module docstring)."""

    def __init__(self, config: BatcherConfig | None = None, *, now: float) -> None:
        self._config = config or BatcherConfig()
        # Full at the start (a budget that starts empty would hold up the first batches).
        self._budget = Budget(self._config.statements_per_s, max(1.0, self._config.statements_per_s * self._config.burst_s), now)
        self.config = self._config
        self._queues: dict[Hashable, _Queue[Item, Handle]] = {}
        self._items = 0  # queued or in flight, all partitions
        # Counters for metrics
        self.refused = 0  # offers refused
        self.batches = 0  # batches handed out
        self.failed = 0  # batches whose write failed

    @property
    def config(self) -> BatcherConfig:
        return self._config

    @config.setter
    def config(self, value: BatcherConfig) -> None:
        self._config = value
        self._budget.rate = value.statements_per_s
        self._budget.burst = max(1.0, value.statements_per_s * value.burst_s)

    def __len__(self) -> int:
        """Items queued or in flight."""
        return self._items

    def offer(self, partition: Hashable, item: Item, handle: Handle, now: float, size: int = 0) -> int | None:
        """Queue ``item`` for ``partition``: None if accepted (it will be in one batch of
        :meth:`due`), else refused now: retry after this many milliseconds."""
        c = self._config
        if self._items >= c.max_items:
            return self._refuse(self._items)
        queue = self._queues.get(partition)
        if queue is None:
            if len(self._queues) >= c.max_partitions:
                return self._refuse(c.max_batch)
            queue = self._queues[partition] = _Queue()
        entries = queue.entries
        if len(entries) >= c.max_queue or (entries and now - entries[0][2] >= c.max_age_s):
            return self._refuse(len(entries))
        entries.append((item, handle, now, size))
        queue.size += size
        self._items += 1
        return None

    def _refuse(self, backlog: float) -> int:
        """A refusal's hint: the time the budget takes to write ``backlog`` items."""
        self.refused += 1
        return retry_ms(backlog / self._config.max_batch / self._config.statements_per_s)

    def due(self, now: float) -> tuple[list[Batch[Item, Handle]], float | None]:
        """Batches to write now, oldest first, within the budget; and when to call again
        (None: nothing is waiting, or only partitions at their in-flight limit)."""
        c = self._config
        out: list[Batch[Item, Handle]] = []
        while True:
            partition, queue, deadline = self._next(now)
            if queue is None:
                return out, deadline
            wait = self._budget.wait(now, 1.0)
            if wait > 0:
                return out, now + wait
            self._budget.spend(1.0)
            batch: Batch[Item, Handle] = Batch(partition, oldest=queue.entries[0][2])
            entries = queue.entries
            while entries and len(batch.items) < c.max_batch and (not batch.items or batch.size + entries[0][3] <= c.max_batch_bytes):
                item, handle, _, size = entries.popleft()
                batch.items.append(item)
                batch.handles.append(handle)
                batch.size += size
            queue.size -= batch.size
            queue.inflight += 1
            self.batches += 1
            out.append(batch)

    def _next(self, now: float) -> tuple[Hashable, _Queue[Item, Handle] | None, float | None]:
        """The due partition whose oldest item waited longest, or (None, None, earliest deadline)."""
        c = self._config
        best: tuple[Hashable, _Queue[Item, Handle] | None, float | None] = (None, None, None)
        oldest = deadline = float("inf")
        for partition, queue in self._queues.items():
            entries = queue.entries
            if not entries or queue.inflight >= c.max_inflight:
                continue
            first = entries[0][2]
            full = len(entries) >= c.max_batch or queue.size >= c.max_batch_bytes
            if full or now - first >= c.linger_s:
                if first < oldest:
                    best, oldest = (partition, queue, None), first
            else:
                deadline = min(deadline, first + c.linger_s)
        if best[1] is None and deadline != float("inf"):
            return None, None, deadline
        return best

    def done(self, batch: Batch[Item, Handle], ok: bool) -> None:
        """``batch`` was written (``ok``) or failed; the caller resolves its handles either way.
        Frees its place (call :meth:`due` again: its partition may be due now)."""
        queue = self._queues.get(batch.partition)
        self._items -= len(batch.items)
        self.failed += not ok
        if queue is None:
            return
        queue.inflight -= 1
        if not queue.entries and not queue.inflight:
            del self._queues[batch.partition]  # idle: bounded by partitions in use, not ever used
