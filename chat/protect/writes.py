"""Storage admission: three lanes under one budget, and hot rooms' writes in batches.

**Lanes** (:class:`~chat.hot.limits.Lanes`). Every send takes one unit of its lane before its
ID is minted: bots' sends (role ``bot``) the bot lane, a hot room's the hot lane, the rest the
interactive lane. While nothing waits and the budget allows, a send passes at once (one call, no
future); otherwise it waits in its lane, FIFO, and the scheduler hands the budget out by the
lanes' weights, bots and hot rooms never above their capped share. A full lane refuses at once:
bots get ``rate_limited``, hot rooms ``throttled``, interactive chat ``unavailable`` — with the
time the lane's backlog takes as ``retry_after_ms``. A wait is bounded by ``wait_s``
(``unavailable`` past it). So a bot flooding its lane queues behind its own share; interactive
sends wait behind at most one bot item.

**Batches** (:class:`~chat.hot.batcher.Batcher`). A hot room's message, once minted, is offered
to the batcher (refused up front with ``throttled`` when the room's queue is full or too old:
nothing is stored). One writer task takes due batches under the ``statements/s`` budget and
writes each with ``MessageStore.insert_messages`` in a task of its own (one per batch, never
one per message), then resolves its senders' futures — the ack still follows the durable
write. A failed batch fails each of its senders with ``unavailable`` (none was acked). A sender
that stopped waiting (its socket closed, its bound passed) is not acked; if its message was
stored anyway, ``orphaned(message)`` lets the message path announce a gap (the room's sockets
resync) and offer it for offline notifications, as if it had been sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from chat.errors import ChatError, RateLimited, Throttled, Unavailable
from chat.hot.batcher import Batch, Batcher, BatcherConfig
from chat.hot.limits import Lane, LaneConfig, Lanes
from chat.models import Message
from chat.protect.counters import Counters
from chat.store.base import MessageStore

log = logging.getLogger(__name__)

Orphaned = Callable[[Message], None]
_Handle = tuple[asyncio.Future[tuple[Message, bool]], Orphaned]
_FULL_LANE: dict[Lane, tuple[type[ChatError], str]] = {
    Lane.BOT: (RateLimited, "bots are posting faster than storage takes them here; slow down"),
    Lane.HOT: (Throttled, "this room is busier than storage allows; try again shortly"),
    Lane.INTERACTIVE: (Unavailable, "storage is saturated right now"),
}
MESSAGE_OVERHEAD = 64  # bytes a message costs in a batch besides its text (IDs, names)


def fresh(error: ChatError) -> ChatError:
    """A copy of ``error`` for one more waiter (errors carry the request they answer)."""
    return type(error)(error.message, retry_after_ms=error.retry_after_ms, **error.extra)


class Writes:
    """This node's lanes and batch writer (see the module docstring)."""

    def __init__(
        self,
        store: MessageStore,
        *,
        counters: Counters,
        lanes: LaneConfig | None = None,
        batcher: BatcherConfig | None = None,
        wait_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._counters = counters
        self._clock = clock
        self.wait_s = wait_s  # the longest a send waits for its lane or its batch
        self.lanes: Lanes[asyncio.Future[None]] = Lanes(lanes, now=clock())
        self.batcher: Batcher[Message, _Handle] = Batcher(batcher, now=clock())
        self._lane_timer: asyncio.TimerHandle | None = None  # the next pump, while lanes hold waiters
        self._wake = asyncio.Event()  # the writer has something to look at
        self._writer_timer: asyncio.TimerHandle | None = None
        self._offered = 0  # offers since the writer last looked (a full batch is due at once)
        self._writing: set[asyncio.Task[None]] = set()  # batch writes in flight
        self._writer: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        self._writer = asyncio.create_task(self._run(), name="hot-batch-writer")

    async def close(self) -> None:
        """Write what is queued (bounded by ``wait_s``), then stop."""
        self._closed = True
        self._wake.set()
        if self._writer is not None:
            done, _ = await asyncio.wait([self._writer, *self._writing], timeout=self.wait_s)
            if self._writer not in done or len(self.batcher):
                log.warning("hot-room batch writer: %d queued message(s) not written at shutdown", len(self.batcher))
                self._writer.cancel()
        for handle in (self._lane_timer, self._writer_timer):
            if handle is not None:
                handle.cancel()

    # Lanes

    def enter(self, lane: Lane) -> Awaitable[None] | None:
        """Take one unit of ``lane``: None (go now), an awaitable (wait, bounded), or raise (the lane is full)."""
        now = self._clock()
        if self.lanes.admit(lane, now):
            return None  # nothing waits anywhere and the budget allows: the quiet node's path
        future = asyncio.get_running_loop().create_future()
        refused = self.lanes.offer(lane, future, now)
        if refused is not None:
            self._counters.lane_refused += 1
            kind, text = _FULL_LANE[lane]
            raise kind(text, retry_after_ms=refused)
        self._pump()
        if future.done():
            return None
        self._counters.lane_waits += 1
        return self._wait(future)

    async def _wait(self, future: asyncio.Future[None]) -> None:
        try:
            await asyncio.wait_for(future, self.wait_s)
        except TimeoutError:
            raise Unavailable("storage is saturated right now", retry_after_ms=1000) from None

    def _on_lane_timer(self) -> None:
        self._lane_timer = None
        self._pump()

    def _pump(self) -> None:
        now = self._clock()
        while (taken := self.lanes.take(now)) is not None:
            future = taken[1]
            if not future.done():  # else its sender gave up waiting
                future.set_result(None)
        at = self.lanes.next_at(now)
        if at is not None and self._lane_timer is None:
            self._lane_timer = asyncio.get_running_loop().call_later(max(0.0, at - now), self._on_lane_timer)

    # Batches

    def write(self, message: Message, orphaned: Orphaned) -> Awaitable[tuple[Message, bool]]:
        """Queue ``message`` for its room's next batch (or raise ``throttled``); await the result."""
        future: asyncio.Future[tuple[Message, bool]] = asyncio.get_running_loop().create_future()
        refused = self.batcher.offer(message.channel, message, (future, orphaned), self._clock(), len(message.text) + MESSAGE_OVERHEAD)
        if refused is not None:
            self._counters.batch_refused += 1
            raise Throttled("this room is busier than storage allows; try again shortly", retry_after_ms=refused)
        self._offered += 1
        if self._writer_timer is None or self._offered >= self.batcher.config.max_batch:
            self._wake.set()  # idle, or a batch may be full: look now (else the linger timer will)
        return self._result(future)

    async def _result(self, future: asyncio.Future[tuple[Message, bool]]) -> tuple[Message, bool]:
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.wait_s)
        except TimeoutError:
            future.cancel()  # its batch resolves nothing for us now; if stored, it is an orphan
            raise Unavailable("storage did not confirm the message in time", retry_after_ms=1000) from None
        except asyncio.CancelledError:
            future.cancel()
            raise

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            self._offered = 0
            if self._writer_timer is not None:
                self._writer_timer.cancel()
                self._writer_timer = None
            now = self._clock()
            batches, next_at = self.batcher.due(now)
            for batch in batches:
                task = asyncio.create_task(self._write(batch))
                self._writing.add(task)
                task.add_done_callback(self._writing.discard)
            if self._closed and not len(self.batcher):
                return
            if next_at is not None:
                self._writer_timer = loop.call_later(max(0.0, next_at - now), self._wake.set)
            await self._wake.wait()

    async def _write(self, batch: Batch[Message, _Handle]) -> None:
        results: list[tuple[Message, bool]] = []
        error: ChatError | None = None
        try:
            results = await self._store.insert_messages(batch.items)
        except ChatError as exc:
            error = exc
        except Exception:
            log.exception("hot-room batch write failed unexpectedly")
            error = Unavailable("storage failed", retry_after_ms=1000)
        self.batcher.done(batch, error is None)
        self._wake.set()  # the room may have more due, and its in-flight slot is free
        if error is not None:
            self._counters.batch_failures += 1
            for future, _ in batch.handles:
                if not future.done():
                    future.set_exception(fresh(error))
            return
        self._counters.batches_written += 1
        self._counters.batched_messages += len(results)
        for (future, orphaned), (message, created) in zip(batch.handles, results, strict=True):
            if not future.done():
                future.set_result((message, created))
            elif created:
                self._counters.orphans += 1
                orphaned(message)
