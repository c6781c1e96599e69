"""Prototypes of proposed changes to the Cassandra adapter's async bridge (benchmarks only).

    .venv/bin/python -m bench.cassandra_variants --patch handoff --patch nowaitfor   # = chat serve, patched
    .venv/bin/python -m bench.store_throughput --patch handoff …                    # the store, patched in-process

Nothing in ``chat/`` imports this. Each patch replaces
``chat.store.cassandra.CassandraMessageStore._request`` (or a process setting) so a benchmark can
measure what the change would give before anyone edits the adapter:

* ``handoff``: driver completions are handed to the event loop in batches — the driver's I/O
  thread appends ``(future, result, error)`` to a per-loop mailbox and calls
  ``loop.call_soon_threadsafe`` only when the mailbox was empty (one self-pipe write and one
  loop wake-up per burst instead of one per request; the same idea as the SQLite store's
  one-wake-up-per-group-commit).
* ``nowaitfor``: ``_request`` awaits the driver's future directly instead of through
  ``asyncio.wait_for(…, 4 × timeout + 5)``; the driver's own ``request_timeout`` (set on the
  execution profile) still ends every request, so the backstop only guarded against a driver
  bug, at the price of a timer handle, a waiter future and a done-callback per request.
* ``switch1ms``: ``sys.setswitchinterval(0.001)`` (default 5 ms): how long a thread that wants
  the GIL (the driver's I/O thread) waits for the running one (the event loop) to drop it.
* ``pubpipe``: the Redis relay's ``publish`` goes over one dedicated, pipelined connection (an
  ``asyncio.Protocol`` writing ``PUBLISH`` commands back to back and resolving a FIFO of futures
  from the integer replies) instead of borrowing a connection from redis-py's
  ``BlockingConnectionPool`` per call (its ``asyncio.Condition`` hand-off, the ``can_read``
  health probe and the per-call ``asyncio.timeout``). Prototype: no reconnect logic beyond
  failing the pending calls with ``Unavailable`` and reconnecting on the next publish.
* ``gclog`` (diagnostic, no behaviour change): logs every Python garbage collection of the node
  that takes longer than 2 ms (generation, duration, objects collected), to see whether the
  node's own GC explains latency stalls.
* ``gcfreeze``: ``gc.freeze()`` once the store is open and gen-0 threshold 50,000 (default 700),
  meant to make collections rarer and cheaper. Measured worse (cross_node at 500/s: 18–19
  collections over 2 ms per run instead of 11, same worst case): kept as a negative result.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

PATCHES = ("handoff", "nowaitfor", "switch1ms", "pubpipe", "gclog", "gcfreeze")


class _Mailbox:
    """Completed driver requests waiting for the loop; one loop wake-up per non-empty burst."""

    __slots__ = ("items", "lock", "loop", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.items: deque[tuple[asyncio.Future[Any], Any, BaseException | None]] = deque()
        self.lock = threading.Lock()
        self.scheduled = False

    def put(self, future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
        """Driver thread: never raises."""
        with self.lock:
            self.items.append((future, result, error))
            if self.scheduled:
                return
            self.scheduled = True
        try:
            self.loop.call_soon_threadsafe(self.drain)
        except RuntimeError:  # loop closed
            pass

    def drain(self) -> None:
        """Loop thread: resolve everything that arrived since the last drain."""
        from chat.store.cassandra import _resolve

        with self.lock:
            items, self.items = self.items, deque()
            self.scheduled = False
        for future, result, error in items:
            _resolve(future, result, error)


_mailboxes: dict[int, _Mailbox] = {}


def _mailbox(loop: asyncio.AbstractEventLoop) -> _Mailbox:
    box = _mailboxes.get(id(loop))
    if box is None or box.loop is not loop:
        box = _mailboxes[id(loop)] = _Mailbox(loop)
    return box


def _make_request(handoff: bool, waitfor: bool) -> Callable[..., Any]:
    from chat.errors import Unavailable
    from chat.store import cassandra as cass

    async def _request(self: Any, statement: Any, params: Sequence[Any] | None) -> list[dict[str, Any]]:
        session = self._session
        if session is None or statement is None or self._closed:
            raise Unavailable("message store is not open", retry_after_ms=1000)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[dict[str, Any]]] = loop.create_future()
        rows: list[dict[str, Any]] = []
        response = session.execute_async(statement, params)
        if handoff:
            hand = _mailbox(loop).put
        else:

            def hand(f: asyncio.Future[Any], r: Any, e: BaseException | None) -> None:
                cass._call_soon(loop, f, r, e)

        def on_page(page: list[dict[str, Any]] | None) -> None:
            try:
                if page:
                    rows.extend(page)
                if response.has_more_pages:
                    response.start_fetching_next_page()
                    return
            except Exception as exc:  # noqa: BLE001
                hand(future, None, exc)
                return
            hand(future, rows, None)

        def on_error(exc: BaseException) -> None:
            hand(future, None, exc)

        response.add_callbacks(on_page, on_error)
        if waitfor:
            try:
                return await asyncio.wait_for(future, 4 * self._timeout_s + 5)
            except TimeoutError:
                raise Unavailable("message store timed out", retry_after_ms=1000) from None
        return await future

    return _request


class _PublishPipe(asyncio.Protocol):
    """One Redis connection, commands pipelined, replies matched in order."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.pending: deque[asyncio.Future[int]] = deque()
        self.buf = bytearray()
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        while True:
            end = buf.find(b"\r\n", pos)
            if end < 0:
                break
            line = bytes(buf[pos:end])
            pos = end + 2
            fut = self.pending.popleft() if self.pending else None
            if fut is None or fut.done():
                continue
            if line[:1] == b":":
                fut.set_result(int(line[1:]))
            else:
                fut.set_exception(ConnectionError(line.decode(errors="replace")))
        del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        while self.pending:
            fut = self.pending.popleft()
            if not fut.done():
                fut.set_exception(ConnectionError("redis connection lost"))

    def publish(self, channel: bytes, payload: bytes) -> asyncio.Future[int]:
        assert self.transport is not None
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.pending.append(fut)
        self.transport.write(
            b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(channel), channel, len(payload), payload)
        )
        return fut


def _patch_pubpipe() -> None:
    from urllib.parse import urlsplit

    from chat.errors import Unavailable
    from chat.relay.redis import RedisRelay

    async def publish(self: Any, topic: str, payload: bytes) -> None:
        if self._closed or self._client is None:
            raise Unavailable("relay is not running")
        pipe = getattr(self, "_bench_pipe", None)
        if pipe is None or pipe.lost:
            url = urlsplit(self._url)
            try:
                _, pipe = await asyncio.wait_for(
                    asyncio.get_running_loop().create_connection(_PublishPipe, url.hostname or "127.0.0.1", url.port or 6379),
                    self._connect_timeout_s,
                )
            except (OSError, TimeoutError):
                raise Unavailable("relay unavailable", retry_after_ms=1000) from None
            self._bench_pipe = pipe
        fut = pipe.publish(self._prefix + topic.encode(), payload)
        try:
            await fut
        except ConnectionError:
            raise Unavailable("relay unavailable", retry_after_ms=1000) from None

    RedisRelay.publish = publish  # type: ignore[method-assign]


def _patch_gclog() -> None:
    import gc
    import logging
    import time

    log = logging.getLogger("bench.gc")
    started: list[float] = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            ms = (time.perf_counter() - started[0]) * 1000
            if ms > 2:
                log.warning("python gc gen%d took %.1f ms (collected %d)", info.get("generation", -1), ms, info.get("collected", 0))

    gc.callbacks.append(callback)


def _patch_gcfreeze() -> None:
    import gc

    from chat.store.cassandra import CassandraMessageStore

    original = CassandraMessageStore.open

    async def open_then_freeze(self: Any) -> None:
        await original(self)
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)

    CassandraMessageStore.open = open_then_freeze  # type: ignore[method-assign]


def apply(patches: Sequence[str]) -> None:
    from chat.store.cassandra import CassandraMessageStore

    unknown = set(patches) - set(PATCHES)
    if unknown:
        raise SystemExit(f"unknown patch(es) {sorted(unknown)}; choose from {PATCHES}")
    if "handoff" in patches or "nowaitfor" in patches:
        CassandraMessageStore._request = _make_request("handoff" in patches, "nowaitfor" not in patches)  # type: ignore[method-assign]
    if "switch1ms" in patches:
        sys.setswitchinterval(0.001)
    if "pubpipe" in patches:
        _patch_pubpipe()
    if "gclog" in patches:
        _patch_gclog()
    if "gcfreeze" in patches:
        _patch_gcfreeze()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patch", action="append", default=[], choices=PATCHES)
    args = parser.parse_args(argv)
    apply(args.patch)
    from chat.__main__ import main as chat_main

    return chat_main(["serve"])


if __name__ == "__main__":
    sys.exit(main())
