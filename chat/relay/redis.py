"""Redis relay: cross-node pub/sub over one Redis (``redis.asyncio`` with hiredis).

Connections per node: **one** pipelined connection for ``PUBLISH`` and ``PING``
(``chat.relay.redis_publisher``), and **one** pub/sub connection read by **one** task, which
hands each message to ``deliver`` in the order Redis sent it (Redis keeps publish order per
publisher connection and channel).

* Every Redis channel name is ``prefix + topic``; the prefix is stripped before ``deliver``.
* ``subscribe``/``unsubscribe`` write their command in call order on the pub/sub connection;
  ``subscribe`` returns once Redis confirmed it, so anything published afterwards is delivered.
  The wanted topics are kept here: messages for a topic no longer wanted are dropped even if
  Redis had them in flight when ``unsubscribe`` was called.
* Loss of the pub/sub connection (EOF, error, or no answer to a ``PING`` within
  ``health_interval_s`` while idle) → reconnect with capped, jittered backoff, re-subscribe every
  wanted topic, and once Redis confirmed them, ``on_gap(topics)``: pub/sub is at-most-once,
  the hub tells those topics' sockets to ``resync`` from the store.
* ``publish`` and ``ping`` raise :class:`~chat.errors.Unavailable` while Redis is unreachable,
  within about ``connect_timeout_s + socket_timeout_s`` (no retries: at-most-once).

This uses plain ``PUBLISH``/``SUBSCRIBE`` (one Redis). On Redis Cluster, use sharded pub/sub
(``SPUBLISH``/``SSUBSCRIBE``, Redis ≥ 7): a channel then lives on the shard owning its key slot
instead of being broadcast over the cluster bus, and the subscriber needs one connection per shard.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
from collections.abc import Awaitable
from dataclasses import dataclass, field

from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.maint_notifications import MaintNotificationsConfig

from chat.errors import Unavailable
from chat.relay.base import DeliverFn, GapFn
from chat.relay.redis_publisher import RedisPublisher

log = logging.getLogger(__name__)

_CHUNK = 512  # channels per re-SUBSCRIBE command after a reconnect
_STABLE_S = 5.0  # a pub/sub connection that lived this long was healthy: reconnect without delay
_FAILURES = (RedisError, OSError, TimeoutError)


class _Lost(Exception):
    """The pub/sub connection a command was waiting on went away."""


@dataclass(slots=True)
class _Pending:
    """A SUBSCRIBE/UNSUBSCRIBE confirmation still to come, in the order the commands were sent."""

    kind: bytes  # b"subscribe" / b"unsubscribe"
    channel: bytes
    future: asyncio.Future[None] | None = None
    # Called (on the loop) when this confirmation arrives: the end of a re-subscribe batch.
    then: list[str] | None = field(default=None)


class RedisRelay:
    """Relay over Redis pub/sub (see the module docstring)."""

    single_node = False

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "",
        name: str = "chat-relay",
        # Timeouts
        connect_timeout_s: float = 1.0,
        socket_timeout_s: float = 1.5,
        subscribe_timeout_s: float = 5.0,
        health_interval_s: float = 5.0,
        # Reconnect backoff
        backoff_min_s: float = 0.05,
        backoff_max_s: float = 2.0,
        # Limits
        max_publish_in_flight: int = 10_000,
    ) -> None:
        # May hold a password: never logged or shown in repr.
        self._url = url
        # Namespace of every Redis channel (tests isolate themselves with it).
        self._prefix = prefix.encode()
        # CLIENT SETNAME of our connections ("<name>-pub" / "<name>-sub"), for CLIENT LIST.
        self.name = name
        self._connect_timeout_s = connect_timeout_s
        self._socket_timeout_s = socket_timeout_s
        # How long subscribe() waits for Redis to confirm (covers a short reconnect).
        self._subscribe_timeout_s = subscribe_timeout_s
        # An idle pub/sub connection is PINGed this often; no answer within one more interval = dead.
        self._health_interval_s = health_interval_s
        self._backoff = (backoff_min_s, backoff_max_s)
        self._max_publish_in_flight = max_publish_in_flight
        self._deliver: DeliverFn | None = None
        self._on_gap: GapFn | None = None
        # PUBLISH and PING, pipelined over one connection.
        self._publisher: RedisPublisher | None = None
        # Builds the pub/sub connection (never shared with the publisher).
        self._sub_pool: ConnectionPool | None = None
        # The live pub/sub connection; None while reconnecting.
        self._conn: AbstractConnection | None = None
        # Set while _conn is usable (connected and its re-subscribe batch sent).
        self._up = asyncio.Event()
        # Topics this node wants (insertion-ordered set): re-subscribed after a reconnect.
        self._wanted: dict[str, None] = {}
        # Confirmations awaited on _conn, oldest first (Redis answers in command order).
        self._pending: collections.deque[_Pending] = collections.deque()
        # Keeps commands in call order while one is being written.
        self._send_lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        # True after a failed publisher call until one succeeds (log once per outage).
        self._publish_failing = False
        self._closed = False

    def __repr__(self) -> str:
        return f"RedisRelay(name={self.name!r}, prefix={self._prefix.decode()!r})"

    # Lifecycle

    async def start(self, deliver: DeliverFn, on_gap: GapFn) -> None:
        """Connect both sides; raises Unavailable if Redis does not answer now."""
        self._deliver, self._on_gap = deliver, on_gap
        common = dict(
            decode_responses=False,
            socket_connect_timeout=self._connect_timeout_s,
            socket_timeout=self._socket_timeout_s,
            retry=Retry(NoBackoff(), 0),  # no hidden retries: at-most-once and bounded
            # RESP2: pub/sub messages and confirmations are plain arrays in command order (RESP3
            # turns them into push frames the parser consumes itself). No maintenance
            # notifications either: with them on ("auto" in redis-py 8) the pool skips its
            # check for a stale connection, so the first PUBLISH after a Redis restart failed.
            protocol=2,
            maint_notifications_config=MaintNotificationsConfig(enabled=False),
        )
        self._publisher = RedisPublisher(
            self._url,
            client_name=f"{self.name}-pub",
            connect_timeout_s=self._connect_timeout_s,
            reply_timeout_s=self._socket_timeout_s,
            max_in_flight=self._max_publish_in_flight,
        )
        self._sub_pool = ConnectionPool.from_url(self._url, client_name=f"{self.name}-sub", **common)
        try:
            await self._published(self._publisher.ping())
            conn = await self._open_sub()
        except Unavailable:
            await self.close()
            raise
        self._reader = asyncio.create_task(self._run(conn), name=f"{self.name}-reader")

    async def close(self) -> None:
        self._closed = True
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(reader, 5)
        conn, self._conn = self._conn, None
        self._up.clear()
        self._fail_pending()
        if conn is not None:
            await conn.disconnect(nowait=True)
        if self._publisher is not None:
            await self._publisher.close()
            self._publisher = None
        if self._sub_pool is not None:
            with contextlib.suppress(*_FAILURES):
                await self._sub_pool.disconnect()
            self._sub_pool = None

    # Publishing

    async def ping(self) -> None:
        if self._closed or self._publisher is None:
            raise Unavailable("relay is not running")
        if not self._up.is_set():
            raise Unavailable("relay is reconnecting to Redis", retry_after_ms=1000)
        await self._published(self._publisher.ping())

    def hand_off(self, topic: str, payload: bytes) -> Awaitable[None]:
        publisher = self._publisher
        if self._closed or publisher is None:
            raise Unavailable("relay is not running")
        try:
            sent = publisher.hand_off(self._prefix + topic.encode(), payload)  # written (or queued) now
        except Unavailable as exc:
            self._publish_failed(exc)
            raise
        return self._published(sent)

    async def publish(self, topic: str, payload: bytes) -> None:
        await self.hand_off(topic, payload)

    async def _published(self, call: Awaitable[object]) -> None:
        """Await a publisher call, logging the first failure of an outage and the recovery."""
        try:
            await call
        except Unavailable as exc:
            self._publish_failed(exc)
            raise
        if self._publish_failing:
            self._publish_failing = False
            log.info("redis relay: publishing again")

    def _publish_failed(self, exc: Unavailable) -> None:
        # One warning per outage, not one per message sent while Redis is down.
        log.log(logging.DEBUG if self._publish_failing else logging.WARNING, "redis relay: publish failed: %s", exc.message)
        self._publish_failing = True

    # Subscriptions

    async def subscribe(self, topic: str) -> None:
        if self._closed:
            raise Unavailable("relay is not running")
        self._wanted[topic] = None
        try:
            async with asyncio.timeout(self._subscribe_timeout_s):
                while topic in self._wanted:  # else unsubscribed meanwhile: nothing to confirm
                    await self._up.wait()
                    try:
                        await self._command(b"subscribe", topic)
                        return
                    except _Lost:
                        continue  # the reconnect re-subscribes it; confirm on the new connection
        except TimeoutError:
            self._wanted.pop(topic, None)
            self._unsubscribe_soon(topic)
            raise Unavailable(f"relay could not subscribe to {topic}", retry_after_ms=1000) from None

    async def unsubscribe(self, topic: str) -> None:
        # Not wanted any more: not re-subscribed after a reconnect, late messages dropped.
        self._wanted.pop(topic, None)
        if not self._up.is_set():
            return
        try:
            async with asyncio.timeout(self._subscribe_timeout_s):
                await self._command(b"unsubscribe", topic)
        except (_Lost, TimeoutError):
            pass  # the connection is going away, and with it the subscription

    def _unsubscribe_soon(self, topic: str) -> None:
        """Best effort, for a subscribe that gave up (Redis may have applied it anyway)."""
        if self._up.is_set() and not self._closed:
            task = asyncio.ensure_future(self.unsubscribe(topic))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _command(self, kind: bytes, topic: str) -> None:
        """Write SUBSCRIBE/UNSUBSCRIBE on the current connection and await Redis's confirmation."""
        channel = self._prefix + topic.encode()
        future = asyncio.get_running_loop().create_future()
        async with self._send_lock:
            conn = self._conn
            if conn is None or not conn.is_connected:
                raise _Lost()
            self._pending.append(_Pending(kind, channel, future))
            try:
                await conn.send_command(kind.upper(), channel, check_health=False)
            except _FAILURES as exc:
                self._connection_lost(conn, exc)
        await future

    # The reader

    async def _open_sub(self, *, quiet: bool = False) -> AbstractConnection:
        """A new pub/sub connection with every wanted topic re-subscribed (confirmed later)."""
        assert self._sub_pool is not None
        conn: AbstractConnection = self._sub_pool.make_connection()  # type: ignore[no-untyped-call]
        try:
            async with asyncio.timeout(self._connect_timeout_s + self._socket_timeout_s):
                await conn.connect()  # type: ignore[no-untyped-call]
                topics = list(self._wanted)
                for i in range(0, len(topics), _CHUNK):
                    chunk = topics[i : i + _CHUNK]
                    channels = [self._prefix + t.encode() for t in chunk]
                    for j, channel in enumerate(channels):
                        last = i + j == len(topics) - 1
                        self._pending.append(_Pending(b"subscribe", channel, then=topics if last else None))
                    await conn.send_command(b"SUBSCRIBE", *channels, check_health=False)
        except (*_FAILURES, ConnectionError) as exc:
            self._pending.clear()
            await conn.disconnect(nowait=True)
            # One warning per outage; the retries of the reconnect loop log at debug level.
            log.log(logging.DEBUG if quiet else logging.WARNING, "redis relay: cannot open the pub/sub connection: %s: %s", type(exc).__name__, exc)
            raise Unavailable("relay unavailable", retry_after_ms=1000) from None
        self._conn = conn
        self._up.set()
        return conn

    async def _run(self, conn: AbstractConnection | None) -> None:
        """The one reader: read, dispatch, and on loss reconnect until closed."""
        loop = asyncio.get_running_loop()
        delay = self._backoff[0]
        connected_at = loop.time()
        lost_at: float | None = None
        failures = 0  # failed attempts in this outage (only the first one is a warning)
        while not self._closed:
            if conn is None:
                try:
                    conn = await self._open_sub(quiet=failures > 0)
                except Unavailable:
                    failures += 1
                    await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                    delay = min(delay * 2, self._backoff[1])
                    continue
                connected_at, failures = loop.time(), 0
                if self._publisher is not None:
                    self._publisher.retry_now()  # Redis is back: publish without waiting out a backoff
                if lost_at is not None:
                    log.info(
                        "redis relay: pub/sub back after %.1fs, re-subscribed %d topics", connected_at - lost_at, len(self._wanted)
                    )
            try:
                await self._read(conn)
            except _FAILURES as exc:
                self._connection_lost(conn, exc)
            except Exception as exc:
                log.exception("redis relay: unexpected error in the reader; reconnecting")
                self._connection_lost(conn, exc)
            await conn.disconnect(nowait=True)
            conn = None
            lost_at = loop.time()
            if lost_at - connected_at > _STABLE_S:
                delay = self._backoff[0]  # it had been fine: reconnect at once
            else:  # flapping: back off before the next attempt too
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self._backoff[1])

    async def _read(self, conn: AbstractConnection) -> None:
        ping_outstanding = False
        while True:
            # A read with an explicit timeout returns None when idle (the connection stays open).
            reply = await conn.read_response(timeout=self._health_interval_s)
            if reply is None:
                if ping_outstanding:
                    raise TimeoutError(f"no answer to PING within {self._health_interval_s}s")
                await conn.send_command(b"PING", check_health=False)
                ping_outstanding = True
                continue
            ping_outstanding = False
            kind = reply[0]
            if kind == b"message":
                self._dispatch(reply[1], reply[2])
            elif kind in (b"subscribe", b"unsubscribe"):
                self._confirmed(kind, reply[1])

    def _dispatch(self, channel: bytes, payload: bytes) -> None:
        topic = channel[len(self._prefix) :].decode(errors="surrogateescape")  # never raises
        if topic not in self._wanted or self._deliver is None:
            return
        try:
            self._deliver(topic, payload)
        except Exception:
            log.exception("relay deliver handler raised for %s", topic)

    def _confirmed(self, kind: bytes, channel: bytes) -> None:
        for i, pending in enumerate(self._pending):
            if pending.kind == kind and pending.channel == channel:
                del self._pending[i]
                break
        else:
            return
        if pending.future is not None and not pending.future.done():
            pending.future.set_result(None)
        if pending.then is not None:
            self._gap(pending.then)

    def _gap(self, topics: list[str]) -> None:
        still = [t for t in topics if t in self._wanted]
        if still and self._on_gap is not None:
            try:
                self._on_gap(still)
            except Exception:
                log.exception("relay on_gap handler raised")

    def _connection_lost(self, conn: AbstractConnection, exc: BaseException) -> None:
        if conn is not self._conn:
            return
        if not self._closed:
            log.warning("redis relay: pub/sub connection lost (%s: %s); reconnecting", type(exc).__name__, exc)
        self._conn = None
        self._up.clear()
        self._fail_pending()

    def _fail_pending(self) -> None:
        pending, self._pending = self._pending, collections.deque()
        for p in pending:
            if p.future is not None and not p.future.done():
                p.future.set_exception(_Lost())
