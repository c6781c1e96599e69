"""The node's presence service: socket events in, batched store writes out, transitions reported.

The gateway calls the tracker and never the store. Contract:

* :meth:`PresenceTracker.connected` (the socket's hello), :meth:`~PresenceTracker.heartbeat` and
  :meth:`~PresenceTracker.disconnected` (a clean close) return at once: they record the event
  in memory and never wait on the store or raise because of it. One flusher task writes what
  is pending in **one** store call (up to ``max_batch`` devices): hellos and closes within
  ``prompt_s``, plain heartbeats within ``flush_interval_s`` (the newest heartbeat of a device
  wins), so 10,000 sockets heartbeating every 5 s cost about ``1 / flush_interval_s`` round
  trips per second.
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
import itertools
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from presence.state import (
    CLOSE,
    OFFLINE,
    ONLINE,
    DeviceEvent,
    OnlineSample,
    Status,
    Transition,
    UserPresence,
)
from presence.store.base import PresenceStore, PresenceUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
Device = tuple[str, str]  # (user, device)

# `GET /v1/channels/{id}/presence` lists at most this many online members.
ONLINE_SAMPLE_MAX = 100


async def _events(beats: dict[Device, int], closes: dict[Device, int]) -> list[DeviceEvent]:
    """The batch as events, heartbeats first; the loop gets a turn every few thousand, so
    a large flush never stalls the node's sockets for long."""
    events: list[DeviceEvent] = []
    for i, ((user, device), at) in enumerate(beats.items()):
        if i and not i % 2000:
            await asyncio.sleep(0)
        events.append(DeviceEvent(user, device, at))
    events += [DeviceEvent(user, device, at, CLOSE) for (user, device), at in closes.items()]
    return events


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
        self._max_pending = max_pending
        self._max_batch = max_batch
        # Entries per store call now: halved after a failed call (a batch too big to be written
        # within the timeout of a loaded store would otherwise fail forever), doubled back
        # after each success.
        self._batch_limit = max_batch
        # Devices per expire call (one script: bounds how long it holds the store), and calls
        # per tick (a crashed node's sockets all expire in the same second).
        self._sweep_batch = sweep_batch
        self._sweep_batches = sweep_batches
        # Not yet written: the newest heartbeat per device, and clean closes.
        self._beats: dict[Device, int] = {}
        self._closes: dict[Device, int] = {}
        # A hello or close waits: flush after prompt_s instead of flush_interval_s.
        self._urgent = False
        # Devices whose hello is not written yet, user → {device: (ms of its latest event,
        # closed?)}: queries on this node see them before the store does.
        self._fresh: dict[str, dict[str, tuple[int, bool]]] = {}
        # Wakes the flusher when its next flush moved earlier (first pending event, or urgent).
        self._nudge = asyncio.Event()
        # One flush at a time, so a device's hello is never overtaken by its close.
        self._flush_lock = asyncio.Lock()
        self._last_flush = float("-inf")  # loop time the last flush started
        self._retry_delay = 0.0  # after failed flushes: the least gap before the next one
        self._outage = _Outage()
        self._dropping = False  # max_pending reached (logged once until it drains)
        self._flusher: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False
        self._flushes = self._written = self._failed_flushes = self._dropped = self._transitions = 0

    def __repr__(self) -> str:
        return f"<PresenceTracker store={self.store!r} pending={len(self._beats) + len(self._closes)}>"

    @property
    def heartbeat_interval_ms(self) -> int:
        """What the ``hello`` frame tells clients."""
        return int(self.heartbeat_s * 1000)

    def notifies_members(self, member_count: int) -> bool:
        """Whether a channel this size gets presence pushes (else members query on demand)."""
        return member_count <= self.fanout_max

    def stats(self) -> TrackerStats:
        return TrackerStats(
            len(self._beats) + len(self._closes), self._flushes, self._written, self._failed_flushes, self._dropped, self._transitions
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
        at = self._record(user, device, urgent=True)
        if at is not None:
            self._fresh.setdefault(user, {})[device] = (at, False)

    async def heartbeat(self, user: str, device: str) -> None:
        """The device is still there (written within ``flush_interval_s``)."""
        self._record(user, device, urgent=False)

    async def disconnected(self, user: str, device: str) -> None:
        """A clean close: the device goes offline now (an abrupt drop is left to the timeout)."""
        key = (user, device)
        # A heartbeat still waiting is written too, before the close (a batch writes closes
        # last): a socket that lived less than a flush still leaves its last_seen.
        if self._closed or (key not in self._closes and not self._room()):
            return
        self._closes[key] = at = self._clock()
        fresh = self._fresh.get(user)
        if fresh is not None and device in fresh:
            fresh[device] = (at, True)
        self._wake(urgent=True)

    def _record(self, user: str, device: str, *, urgent: bool) -> int | None:
        if not user or not device:
            raise ValueError("user and device must be non-empty")
        key = (user, device)
        if self._closed or (key not in self._beats and not self._room()):
            return None
        self._beats[key] = at = self._clock()
        self._wake(urgent)
        return at

    def _room(self) -> bool:
        if len(self._beats) + len(self._closes) < self._max_pending:
            return True
        self._dropped += 1
        if not self._dropping:
            self._dropping = True
            log.warning("presence: %d devices wait to be written; dropping new ones until the store catches up", self._max_pending)
        return False

    def _wake(self, urgent: bool) -> None:
        if urgent and not self._urgent:
            self._urgent = True
            self._nudge.set()
        elif len(self._beats) + len(self._closes) == 1:
            self._nudge.set()  # the first pending event: the flusher was idle
        self._spawn()

    # Queries

    async def query(self, users: Sequence[str]) -> dict[str, UserPresence]:
        """Presence of each user (raises PresenceUnavailable if the store does not answer)."""
        result = await self._read(self.store.query(users))
        for user in self._fresh.keys() & result.keys():
            current = result[user]
            if current.status == OFFLINE:
                devices = self._fresh[user].values()
                seen = max(at for at, _ in devices)
                status: Status = OFFLINE if all(closed for _, closed in devices) else ONLINE
                result[user] = UserPresence(status, max(seen, current.last_seen or seen))
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
        if not self._beats and not self._closes:
            return True
        beats, closes = self._take()
        urgent, self._urgent = self._urgent, bool(self._beats or self._closes)
        self._last_flush = asyncio.get_running_loop().time()
        try:
            events = await _events(beats, closes)
            async with asyncio.timeout(self._call_timeout_s):
                transitions = await self.store.apply(events)
        except asyncio.CancelledError:
            self._restore(beats, closes, urgent)
            raise
        except Exception as exc:  # noqa: BLE001 - presence is best effort: keep the batch, retry
            self._restore(beats, closes, urgent)
            self._failed_flushes += 1
            self._batch_limit = max(1, self._batch_limit // 2)
            self._retry_delay = min(max(2 * self._retry_delay, self._flush_interval_s), self._retry_max_s)
            self._outage.failed("writing heartbeats", exc)
            return False
        self._retry_delay = 0.0
        self._batch_limit = min(self._max_batch, 2 * self._batch_limit)
        self._outage.recovered()
        self._flushes += 1
        self._written += len(events)
        if self._dropping and len(self._beats) + len(self._closes) < self._max_pending // 2:
            self._dropping = False
        for user, devices in list(self._fresh.items()):
            for device in [d for d in devices if (user, d) in beats]:
                del devices[device]
            if not devices:
                del self._fresh[user]
        self._emit(transitions)
        return True

    def _take(self) -> tuple[dict[Device, int], dict[Device, int]]:
        """What the next store call writes: everything, or the batch limit's worth (closes first,
        each with its device's waiting heartbeat) so one call stays inside its timeout. What is
        left is marked urgent: written batch after batch, ``prompt_s`` apart."""
        limit = self._batch_limit
        if len(self._beats) + len(self._closes) <= limit:
            taken = self._beats, self._closes
            self._beats, self._closes = {}, {}
            return taken
        beats: dict[Device, int] = {}
        closes: dict[Device, int] = {}
        for key in list(itertools.islice(self._closes, max(1, limit // 2))):
            closes[key] = self._closes.pop(key)
            if key in self._beats:
                beats[key] = self._beats.pop(key)
        for key in list(itertools.islice(self._beats, max(0, limit - len(beats) - len(closes)))):
            beats[key] = self._beats.pop(key)
        return beats, closes

    def _restore(self, beats: dict[Device, int], closes: dict[Device, int], urgent: bool) -> None:
        """Put a batch that was not written back, behind anything newer that arrived meanwhile."""
        for key, at in beats.items():
            if key not in self._beats and self._room():
                self._beats[key] = at
        for key, at in closes.items():
            if key not in self._closes and self._room():
                self._closes[key] = at
        self._urgent = self._urgent or urgent

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._nudge.clear()
            wait: float | None = None  # nothing pending: until an event nudges
            if self._beats or self._closes:
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
