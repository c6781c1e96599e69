"""The node's presence service: socket events in, batched store writes out, transitions reported.

The gateway calls the tracker and never the store. Contract:

* :meth:`PresenceTracker.connected` (the socket's hello), :meth:`~PresenceTracker.heartbeat`
  (a plain function: the hot path) and :meth:`~PresenceTracker.disconnected` (a clean close)
  return at once: they record the event in memory and never wait on the store or raise
  because of it. One flusher task writes what is pending in **one** store call (up to
  ``max_batch`` devices): hellos and closes within ``prompt_s``, plain heartbeats within
  ``flush_interval_s`` (the newest heartbeat of a device wins), so 10,000 sockets heartbeating
  every 5 s cost about ``1 / flush_interval_s`` round trips per second.
* A batch writes heartbeats first, then closes, so a close always wins (a device id is one
  socket's: it is never reused after its close). A failed flush keeps its batch for the next
  one (retried with capped backoff, the batch halved each time down to what the store answers
  in time). At most ``max_pending`` devices wait: past it new entries are dropped (a dropped
  hello is made good by the device's next heartbeat, a dropped close becomes a timeout).
  Store failures are logged once per outage. Events after :meth:`~PresenceTracker.close` are
  ignored: close the tracker after the sockets.
* Every transition this node's writes or sweeps caused goes to ``on_transition`` (called on the
  loop, after the store confirmed it; it must not block). Each transition in the cluster is
  reported by exactly one node, so the caller publishes it to every node. A batch whose reply
  was lost may have been applied: its transitions are then lost (watchers can query).
* The sweeper expires stale devices every ``sweep_interval_s`` while ``is_leader()`` is True
  (one leader per cluster; the embedded node is always its own leader).
* :meth:`~PresenceTracker.query` and :meth:`~PresenceTracker.online_among` answer from the store
  within ``call_timeout_s`` or raise :class:`~presence.store.base.PresenceUnavailable`. A query
  also counts this node's hellos not yet written (a user who just connected here reads online).
* ``clock`` (ms since the Unix epoch) is injected: tests move time instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from presence.pending import Batch, PendingWrites
from presence.state import DeviceEvent, OnlineSample, Transition, UserPresence
from presence.store.base import PresenceStore, PresenceUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

# `GET /v1/channels/{id}/presence` lists at most this many online members.
ONLINE_SAMPLE_MAX = 100


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _always_leader() -> bool:
    return True


@dataclass(frozen=True, slots=True)
class TrackerStats:
    """Counters since start, for metrics and benchmarks."""

    pending: int  # devices waiting to be written
    flushes: int  # successful store writes (one round trip each)
    written: int  # events written by them
    failed_flushes: int
    dropped: int  # events refused because max_pending devices were waiting
    transitions: int  # reported to on_transition


class _Outage:
    """The first failure of an outage is a warning, the rest debug, the recovery info."""

    def __init__(self) -> None:
        self.since: float | None = None

    def failed(self, what: str, exc: BaseException) -> None:
        first = self.since is None
        if first:
            self.since = time.monotonic()
        log.log(logging.WARNING if first else logging.DEBUG, "presence: %s failed (%s: %s); retrying", what, type(exc).__name__, exc)

    def recovered(self) -> None:
        if self.since is not None:
            log.info("presence: store answering again after %.1fs", time.monotonic() - self.since)
            self.since = None


class PresenceTracker:
    """One node's presence service (see the module docstring for the contract)."""

    def __init__(
        self,
        store: PresenceStore,
        *,
        heartbeat_s: float = 5.0,
        fanout_max: int = 100,
        on_transition: Callable[[Transition], None] | None = None,
        is_leader: Callable[[], bool] = _always_leader,
        clock: Callable[[], int] = wall_clock_ms,
        # Timing
        flush_interval_s: float = 0.5,
        prompt_s: float = 0.05,
        sweep_interval_s: float = 1.0,
        retry_max_s: float = 5.0,
        # Timeouts
        call_timeout_s: float = 3.0,
        close_timeout_s: float = 2.0,
        # Limits
        max_pending: int = 100_000,
        max_batch: int = 20_000,
        sweep_batch: int = 250,
        sweep_batches: int = 40,
    ) -> None:
        if store.timeout_ms < 2 * heartbeat_s * 1000:
            # A device heartbeating on time would go offline whenever one heartbeat is late.
            raise ValueError("the presence timeout must be at least twice the heartbeat interval")
        self.store = store
        self.heartbeat_s = heartbeat_s
        # Channels with more members than this get no presence pushes (members ask instead).
        self.fanout_max = fanout_max
        self._on_transition = on_transition
        self._is_leader = is_leader
        self._clock = clock
        self._flush_interval_s = flush_interval_s
        self._prompt_s = prompt_s
        self._sweep_interval_s = sweep_interval_s
        self._retry_max_s = retry_max_s
        self._call_timeout_s = call_timeout_s
        self._close_timeout_s = close_timeout_s
        self._max_batch = max_batch
        # Entries per store call now: halved after a failed call (a batch too big to be written
        # within the timeout of a loaded store would otherwise fail forever), doubled back
        # after each success.
        self._batch_limit = max_batch
        # Devices per expire call (one script: bounds how long it holds the store), and calls
        # per tick (a crashed node's sockets all expire in the same second).
        self._sweep_batch = sweep_batch
        self._sweep_batches = sweep_batches
        # Recorded, not yet written (bounded by max_pending).
        self._pending = PendingWrites(max_pending)
        # A hello or close waits: flush after prompt_s instead of flush_interval_s.
        self._urgent = False
        # Wakes the flusher when its next flush moved earlier (first pending event, or urgent).
        self._nudge = asyncio.Event()
        # One flush at a time, so a device's hello is never overtaken by its close.
        self._flush_lock = asyncio.Lock()
        self._last_flush = float("-inf")  # loop time the last flush started
        self._retry_delay = 0.0  # after failed flushes: the least gap before the next one
        self._outage = _Outage()
        self._dropping = False  # max_pending reached: logged once until it drains
        self._flusher: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False
        self._flushes = self._written = self._failed_flushes = self._transitions = 0

    def __repr__(self) -> str:
        return f"<PresenceTracker store={self.store!r} pending={len(self._pending)}>"

    @property
    def heartbeat_interval_ms(self) -> int:
        """What the ``hello`` frame tells clients."""
        return int(self.heartbeat_s * 1000)

    def notifies_members(self, member_count: int) -> bool:
        """Whether a channel this size gets presence pushes (else members query on demand)."""
        return member_count <= self.fanout_max

    def stats(self) -> TrackerStats:
        return TrackerStats(
            len(self._pending), self._flushes, self._written, self._failed_flushes, self._pending.dropped, self._transitions
        )

    # Lifecycle

    async def start(self) -> None:
        """Start the flusher and the sweeper (the first event starts them if this was not called)."""
        self._spawn()

    async def close(self) -> None:
        """Stop the sweeper and write what is pending (bounded by ``close_timeout_s``)."""
        self._closed = True
        for task in (self._sweeper, self._flusher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._close_timeout_s):
                await self.flush()

    def _spawn(self) -> None:
        if self._flusher is None and not self._closed:
            self._flusher = asyncio.create_task(self._flush_loop(), name="presence-flusher")
            self._sweeper = asyncio.create_task(self._sweep_loop(), name="presence-sweeper")

    # Events from the gateway: never wait, never raise for the store.

    async def connected(self, user: str, device: str) -> None:
        """A socket said hello: its device shows online within ``prompt_s`` and a round trip."""
        self._record(user, device, hello=True)

    def heartbeat(self, user: str, device: str) -> None:
        """The device is still there (written within ``flush_interval_s``). Not a coroutine:
        the gateway answers a heartbeat frame without awaiting anything."""
        self._record(user, device, hello=False)

    async def disconnected(self, user: str, device: str) -> None:
        """A clean close: the device goes offline now (an abrupt drop is left to the timeout)."""
        if self._closed:
            return
        # A heartbeat still waiting is written too, before the close: a socket that lived less
        # than a flush still leaves its last_seen.
        if self._pending.close(user, device, self._clock()):
            self._wake(urgent=True)
        else:
            self._refused()

    def _record(self, user: str, device: str, *, hello: bool) -> None:
        if not user or not device:
            raise ValueError("user and device must be non-empty")
        if self._closed:
            return
        if self._pending.beat(user, device, self._clock(), hello=hello):
            self._wake(urgent=hello)
        else:
            self._refused()

    def _refused(self) -> None:
        if not self._dropping:
            self._dropping = True
            log.warning("presence: %d devices wait to be written; dropping new ones until the store catches up", self._pending.max_pending)

    def _wake(self, urgent: bool) -> None:
        if urgent and not self._urgent:
            self._urgent = True
            self._nudge.set()
        elif len(self._pending) == 1:
            self._nudge.set()  # the first pending event: the flusher was idle
        self._spawn()

    # Queries

    async def query(self, users: Sequence[str]) -> dict[str, UserPresence]:
        """Presence of each user (raises PresenceUnavailable if the store does not answer)."""
        result = await self._read(self.store.query(users))
        self._pending.overlay(result)
        return result

    async def online_among(self, users: Sequence[str], limit: int = ONLINE_SAMPLE_MAX) -> OnlineSample:
        """How many of ``users`` are online and up to ``limit`` of them (written state only)."""
        return await self._read(self.store.online_among(users, limit))

    async def _read(self, call: Coroutine[Any, Any, T]) -> T:
        try:
            async with asyncio.timeout(self._call_timeout_s):
                return await call
        except TimeoutError:
            raise PresenceUnavailable("presence store: no reply in time") from None

    # Writing

    async def flush(self) -> bool:
        """Write what is pending now (up to the batch limit) in one store call; False if that
        failed (the batch is kept)."""
        async with self._flush_lock:
            return await self._flush_locked()

    async def _flush_locked(self) -> bool:
        if not self._pending:
            return True
        batch = self._pending.take(self._batch_limit)
        urgent, self._urgent = self._urgent, bool(self._pending)  # a rest is written right after
        self._last_flush = asyncio.get_running_loop().time()
        try:
            events: list[DeviceEvent] = []
            for part in batch.events(2000):
                events += part
                await asyncio.sleep(0)  # thousands of devices: let the node's sockets have a turn
            async with asyncio.timeout(self._call_timeout_s):
                transitions = await self.store.apply(events)
        except asyncio.CancelledError:
            self._failed(batch, urgent)
            raise
        except Exception as exc:  # noqa: BLE001 - presence is best effort: keep the batch, retry
            self._failed(batch, urgent)
            self._failed_flushes += 1
            self._retry_delay = min(max(2 * self._retry_delay, self._flush_interval_s), self._retry_max_s)
            self._outage.failed("writing heartbeats", exc)
            return False
        self._retry_delay = 0.0
        self._batch_limit = min(self._max_batch, 2 * self._batch_limit)
        self._outage.recovered()
        self._flushes += 1
        self._written += len(events)
        self._pending.written(batch)
        if self._dropping and len(self._pending) < self._pending.max_pending // 2:
            self._dropping = False
        self._emit(transitions)
        return True

    def _failed(self, batch: Batch, urgent: bool) -> None:
        self._pending.restore(batch)
        self._urgent = self._urgent or urgent
        self._batch_limit = max(1, self._batch_limit // 2)

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._nudge.clear()
            wait: float | None = None  # nothing pending: until an event nudges
            if self._pending:
                gap = max(self._prompt_s if self._urgent else self._flush_interval_s, self._retry_delay)
                wait = self._last_flush + gap - loop.time()
                if wait <= 0:
                    try:
                        await self.flush()
                    except Exception:  # a bug must not stop presence writes
                        log.exception("presence: flush crashed")
                    continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._nudge.wait()

    # Sweeping

    async def sweep(self) -> int:
        """If this node leads: expire what is due now; the number of users that went offline."""
        if not self._leading():
            return 0
        now = self._clock()
        offline = 0
        for _ in range(self._sweep_batches):  # bounded per tick; the rest waits for the next
            try:
                async with asyncio.timeout(self._call_timeout_s):
                    expiry = await self.store.expire(now, self._sweep_batch)
            except Exception as exc:  # noqa: BLE001 - retried next tick
                self._outage.failed("sweeping", exc)
                break
            self._outage.recovered()
            self._emit(expiry.transitions)
            offline += len(expiry.transitions)
            if not expiry.more:
                break
        return offline

    def _leading(self) -> bool:
        try:
            return bool(self._is_leader())
        except Exception:  # unsure whether we lead: then we do not
            log.exception("presence: is_leader raised")
            return False

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval_s)  # a period, not a wait for an event
            try:
                await self.sweep()
            except Exception:  # a bug must not stop the sweeper
                log.exception("presence: sweep crashed")

    def _emit(self, transitions: list[Transition]) -> None:
        self._transitions += len(transitions)
        handler = self._on_transition
        if handler is None:
            return
        for transition in transitions:
            try:
                handler(transition)
            except Exception:  # the handler's bug must not stop presence
                log.exception("presence: on_transition raised for %s", transition.user)
