"""Driver thread → event loop: one hand-off for every store whose I/O runs on threads.

The Cassandra driver finishes requests on its own I/O thread; the SQLite store commits on
its writer thread. Either way a result computed on a foreign thread must resolve an
:class:`asyncio.Future` that belongs to a loop, and only that loop's thread may touch it.

Scheduling each result with ``loop.call_soon_threadsafe`` costs a self-pipe write and a loop
wake-up per result. A :class:`Mailbox` instead collects ``(future, result, error)`` items from
any thread under a lock and schedules its drain only when it was empty: a burst of results
(a Cassandra driver completing many requests, an SQLite group commit) costs one wake-up,
and one drain on the loop resolves them all. (BENCHMARKS.md: with the Cassandra adapter
awaiting its futures directly, +15 % node throughput, -25 % client CPU per request.)

A mailbox can also bound every wait without a timer per request (``sweep_s``): futures
registered with :meth:`Mailbox.track` are kept in two generations; every ``sweep_s`` the
sweeper fails what is still unanswered in the old one with :class:`~chat.errors.Unavailable`
and makes the young one old. An unanswered future thus fails between ``sweep_s`` and
``2 × sweep_s`` after it was tracked. Per request that is a set insert and a discard; the
sweeper is one timer handle, armed only while tracked futures are in flight.

Threads: :meth:`Mailbox.put` and :meth:`Mailbox.put_many` run on any thread and never raise
(an exception there would surface inside a driver's reactor or kill a writer thread); the
rest runs on the loop's thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Iterable
from typing import Any, TypeAlias

from chat.errors import Unavailable

log = logging.getLogger(__name__)

# (future, result, error): error None means success with result.
Item: TypeAlias = tuple[asyncio.Future[Any], Any, BaseException | None]


def resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """Loop thread: settle ``future`` unless it already is (its caller was cancelled or timed
    out and went away, or the sweeper failed it): a late answer is dropped, never raised."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Mailbox:
    """Hands results from foreign threads to one event loop in batches (see the module docstring).

    ``sweep_s``: the sweeper's generation length, or None for a mailbox whose callers bound
    their waits themselves (then :meth:`track` must not be used). ``name`` labels log lines.
    """

    __slots__ = ("_dead", "_items", "_lock", "_old", "_scheduled", "_sweep_s", "_sweeper", "_young", "drains", "loop", "name")

    def __init__(self, loop: asyncio.AbstractEventLoop, *, name: str, sweep_s: float | None = None) -> None:
        # The loop every future handed to this mailbox belongs to.
        self.loop = loop
        self.name = name
        # How many drains ran on the loop: one per loop wake-up (benchmarks and tests read it).
        self.drains = 0
        self._items: deque[Item] = deque()
        # Guards _items, _scheduled and _dead: the only state foreign threads touch.
        self._lock = threading.Lock()
        # A drain is queued on the loop: later puts need not wake it.
        self._scheduled = False
        # The loop is closed: whatever arrives is dropped (nobody can be waiting for it).
        self._dead = False
        self._young: set[asyncio.Future[Any]] = set()
        self._old: set[asyncio.Future[Any]] = set()
        self._sweep_s = sweep_s
        self._sweeper: asyncio.TimerHandle | None = None

    def track(self, future: asyncio.Future[Any]) -> None:
        """Loop thread: ``future`` waits for a foreign thread; the sweeper fails it if nothing comes.

        Track a future only once the work that will answer it was really started, so the
        sweeper never fails a future that nobody awaits."""
        if self._sweep_s is None:
            raise ValueError(f"mailbox {self.name!r} has no sweeper (sweep_s=None)")
        self._young.add(future)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self._sweep_s, self._sweep)

    def put(self, future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
        """Any thread: queue one result; wake the loop only if the mailbox was empty. Never raises."""
        with self._lock:
            if self._dead:
                return
            self._items.append((future, result, error))
            if self._scheduled:
                return  # the queued drain will see this item too
            self._scheduled = True
        self._wake()

    def put_many(self, items: Iterable[Item]) -> None:
        """Any thread: queue several results with at most one loop wake-up. Never raises."""
        with self._lock:
            if self._dead:
                return
            before = len(self._items)
            self._items.extend(items)
            if self._scheduled or len(self._items) == before:
                return
            self._scheduled = True
        self._wake()

    def _wake(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except Exception:  # noqa: BLE001 - RuntimeError once the loop is closed: nobody is waiting
            with self._lock:
                self._dead = True
                self._items.clear()

    def _drain(self) -> None:
        """Loop thread: resolve everything that arrived since the last drain."""
        with self._lock:
            items, self._items = self._items, deque()
            # Reset under the lock: a put after this point schedules the next drain itself.
            self._scheduled = False
        self.drains += 1
        young, old = self._young, self._old
        for future, result, error in items:
            young.discard(future)
            old.discard(future)
            try:
                resolve(future, result, error)
            except Exception:  # one bad item must not strand the rest of the batch
                log.exception("%s: could not resolve a future", self.name)

    def _sweep(self) -> None:
        """Loop thread: fail the futures unanswered for a whole generation, age the rest."""
        assert self._sweep_s is not None
        expired, self._old, self._young = self._old, self._young, set()
        failed = 0
        for future in expired:
            if not future.done():
                future.set_exception(Unavailable("message store timed out", retry_after_ms=1000))
                failed += 1
        if failed:
            log.warning("%s: %d request(s) got no answer within %.1f s; failed them", self.name, failed, self._sweep_s)
        self._sweeper = self.loop.call_later(self._sweep_s, self._sweep) if self._old else None
