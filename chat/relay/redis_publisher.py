"""One pipelined Redis connection for ``PUBLISH`` (and ``PING``).

Why not redis-py's pool here: every message of every channel is published, so this is the
node's hottest Redis call. Through ``BlockingConnectionPool`` each call checks a connection
out (an ``asyncio.Condition`` hand-off), probes it (``can_read``: an epoll register and
unregister) and arms a timeout, and only one command is in flight per connection. Over one
connection with commands written back to back, the node's CPU per message fell by 45 % and
its throughput doubled (BENCHMARKS.md, ``--patch pubpipe``). Redis answers in command order,
so replies are matched to a FIFO of futures, and one connection also keeps publish order.

The commands used here only ever answer with simple RESP2 replies (``:n``, ``+OK``,
``+PONG``, ``-ERR …``), so the reply parser is a line splitter. redis-py still parses the URL.

Bounds: a call fails with :class:`~chat.errors.Unavailable` if the connection cannot be made
within ``connect_timeout_s`` (after such a timeout, at once for a short backoff), if its reply has not come within ``reply_timeout_s`` (a
watchdog then aborts the connection and fails everything in flight), if Redis stopped reading
(the transport paused writing), or if ``max_in_flight`` calls are already waiting.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
import time
from typing import Any

from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection, parse_url

from chat.errors import Unavailable

log = logging.getLogger(__name__)

_BACKOFF_MIN_S = 0.25
_BACKOFF_MAX_S = 2.0


class _Refused(Unavailable):
    """Redis answered the command with an error reply."""


class _Protocol(asyncio.Protocol):
    """The connection: writes commands, resolves one future per reply line in order."""

    def __init__(self, reply_timeout_s: float, max_in_flight: int) -> None:
        self.transport: asyncio.Transport | None = None
        # (future, monotonic time sent), oldest first: Redis replies in command order.
        self.pending: collections.deque[tuple[asyncio.Future[bytes], float]] = collections.deque()
        self.lost = False
        self.paused = False  # the kernel buffer is full: Redis is not reading
        self._buf = bytearray()
        self._reply_timeout_s = reply_timeout_s
        self._max_in_flight = max_in_flight
        self._watchdog: asyncio.TimerHandle | None = None

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._arm()

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        start = 0
        while (end := buf.find(b"\r\n", start)) >= 0:
            line = bytes(buf[start:end])
            start = end + 2
            if not self.pending:
                self._abort(f"unexpected reply {line[:40]!r}")
                return
            future, _ = self.pending.popleft()
            if future.done():
                continue  # its caller was cancelled
            kind = line[:1]
            if kind in (b":", b"+"):
                future.set_result(line[1:])
            elif kind == b"-":
                future.set_exception(_Refused(f"redis refused: {line[1:200].decode(errors='replace')}", retry_after_ms=1000))
            else:  # a bulk or array reply: not something PUBLISH/PING/AUTH answer
                self._abort(f"unexpected reply type {kind!r}")
                return
        del buf[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._fail_all("redis connection lost")

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    # Calls

    def call(self, packed: bytes, future: asyncio.Future[bytes] | None = None) -> asyncio.Future[bytes]:
        """Write one packed command now; ``future`` (or a new one) gets its reply or Unavailable."""
        if self.lost or self.transport is None:
            raise Unavailable("relay unavailable", retry_after_ms=1000)
        if self.paused or len(self.pending) >= self._max_in_flight:
            raise Unavailable("relay is not keeping up", retry_after_ms=1000)
        if future is None:
            future = asyncio.get_running_loop().create_future()
        self.pending.append((future, time.monotonic()))
        self.transport.write(packed)
        return future

    def close(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.close()

    # Watchdog: one timer per connection, not one per call.

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._watchdog = loop.call_later(self._reply_timeout_s / 4, self._check)

    def _check(self) -> None:
        self._watchdog = None
        if self.lost:
            return
        if self.pending and time.monotonic() - self.pending[0][1] > self._reply_timeout_s:
            self._abort(f"no reply within {self._reply_timeout_s}s")
            return
        self._arm()

    def _abort(self, why: str) -> None:
        log.warning("redis publisher: %s; dropping the connection", why)
        self._fail_all(why)
        if self.transport is not None:
            self.transport.abort()  # close() would wait to flush to a Redis that is not reading

    def _fail_all(self, why: str) -> None:
        pending, self.pending = self.pending, collections.deque()
        for future, _ in pending:
            if not future.done():
                future.set_exception(Unavailable(f"relay unavailable ({why})", retry_after_ms=1000))


def pack(*args: bytes) -> bytes:
    """A RESP command (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(out)


class RedisPublisher:
    """``PUBLISH``/``PING`` over one pipelined connection, reconnected on demand."""

    def __init__(
        self,
        url: str,
        *,
        client_name: str,
        connect_timeout_s: float = 1.0,
        reply_timeout_s: float = 1.5,
        max_in_flight: int = 10_000,
    ) -> None:
        self._target = _target(url)  # may hold a password: never logged
        self._client_name = client_name
        self._connect_timeout_s = connect_timeout_s
        self._reply_timeout_s = reply_timeout_s
        self._max_in_flight = max_in_flight
        self._conn: _Protocol | None = None
        # One connection attempt at a time, shared by every caller that needs it.
        self._connecting: asyncio.Task[None] | None = None
        # Commands handed off while there was no connection, written in order once there is.
        self._backlog: collections.deque[tuple[bytes, asyncio.Future[bytes]]] = collections.deque()
        # After an attempt that timed out, calls fail at once until this monotonic time
        # (capped exponential backoff): while Redis is unreachable a send is acked without
        # first waiting out a connect timeout, and its gap is announced when Redis is back.
        self._retry_at = 0.0
        self._backoff_s = _BACKOFF_MIN_S
        self._closed = False

    def hand_off(self, channel: bytes, payload: bytes) -> asyncio.Future[bytes]:
        """Write ``PUBLISH`` now (or queue it, in order, while connecting); await for the reply."""
        return self._send(b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(channel), channel, len(payload), payload))

    async def publish(self, channel: bytes, payload: bytes) -> None:
        await self.hand_off(channel, payload)

    async def ping(self) -> None:
        await self._send(pack(b"PING"))

    def retry_now(self) -> None:
        """Redis answered elsewhere (the pub/sub connection is back): end the backoff."""
        self._retry_at = 0.0

    async def close(self) -> None:
        self._closed = True
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        self._fail_backlog("relay is not running")
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _send(self, packed: bytes) -> asyncio.Future[bytes]:
        conn = self._conn
        if conn is not None and not conn.lost:
            return conn.call(packed)
        # No connection: queue behind what is already waiting, so hand-off order is kept.
        if self._closed:
            raise Unavailable("relay is not running")
        connecting = self._connecting is not None and not self._connecting.done()
        if not connecting and time.monotonic() < self._retry_at:
            raise Unavailable("relay unavailable (reconnecting)", retry_after_ms=1000)
        if len(self._backlog) >= self._max_in_flight:
            raise Unavailable("relay is not keeping up", retry_after_ms=1000)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._backlog.append((packed, future))
        if not connecting:
            self._connecting = asyncio.create_task(self._connect(), name="redis-publisher-connect")
        return future

    async def _connect(self) -> None:
        """Open a connection and write the backlog in order; on failure, fail the backlog."""
        try:
            conn = await self._open()
        except Unavailable as exc:
            self._fail_backlog(exc.message)
            return
        except asyncio.CancelledError:
            self._fail_backlog("relay is not running")
            raise
        backlog, self._backlog = self._backlog, collections.deque()
        for packed, future in backlog:
            if future.done():
                continue  # its caller gave up
            try:
                conn.call(packed, future)
            except Unavailable as exc:
                future.set_exception(exc)

    def _fail_backlog(self, why: str) -> None:
        backlog, self._backlog = self._backlog, collections.deque()
        for _, future in backlog:
            if not future.done():
                future.set_exception(Unavailable(why, retry_after_ms=1000))

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        target = self._target

        def factory() -> _Protocol:
            return _Protocol(self._reply_timeout_s, self._max_in_flight)

        conn: _Protocol | None = None
        try:
            async with asyncio.timeout(self._connect_timeout_s + self._reply_timeout_s):
                if "path" in target:
                    _, conn = await loop.create_unix_connection(factory, target["path"])
                else:
                    _, conn = await loop.create_connection(factory, target["host"], target["port"], ssl=target.get("ssl"))
                replies = []
                if target.get("password") is not None:
                    auth = [b"AUTH", target["password"].encode()]
                    if target.get("username"):
                        auth.insert(1, target["username"].encode())
                    replies.append(conn.call(pack(*auth)))
                replies.append(conn.call(pack(b"CLIENT", b"SETNAME", self._client_name.encode())))
                for reply in replies:
                    await reply
        except (OSError, TimeoutError, Unavailable) as exc:
            if conn is not None:
                conn.close()
            refused_connect = isinstance(exc, OSError) and not isinstance(exc, TimeoutError)
            if isinstance(exc, _Refused):
                why = "authentication or handshake refused"
            elif refused_connect:
                why = type(exc).__name__
            else:  # no connection or no handshake reply in time (TimeoutError, or the watchdog)
                why = "TimeoutError"
            if not refused_connect:
                # A refused connect is instant and simply tried again on the next call, so the
                # first send after Redis is back goes out live; a connect or handshake that
                # hangs (or a refused AUTH) would cost every caller its wait: back off.
                self._retry_at = time.monotonic() + self._backoff_s
                self._backoff_s = min(self._backoff_s * 2, _BACKOFF_MAX_S)
            raise Unavailable(f"relay unavailable ({why})", retry_after_ms=1000) from None
        if self._closed:
            conn.close()
            raise Unavailable("relay is not running")
        self._conn = conn
        self._backoff_s = _BACKOFF_MIN_S
        return conn


def _target(url: str) -> dict[str, Any]:
    """Where to connect, from a redis://, rediss:// or unix:// URL (parsed by redis-py)."""
    parsed = parse_url(url)
    target: dict[str, Any] = {
        "host": parsed.get("host") or "127.0.0.1",
        "port": int(parsed.get("port") or 6379),
        "username": parsed.get("username"),
        "password": parsed.get("password"),
    }
    cls = parsed.get("connection_class")
    if cls is UnixDomainSocketConnection:
        target["path"] = parsed["path"]
    elif cls is SSLConnection:
        target["ssl"] = ssl.create_default_context()
    return target
