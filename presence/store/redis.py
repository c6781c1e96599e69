"""Redis PresenceStore (``redis.asyncio`` with hiredis): presence shared by every node.

The rules are those of presence/state.py. Writes and expiry run the Lua scripts of
:mod:`presence.store.redis_scripts` (key layout there), each atomic in Redis: a plain heartbeat
costs one ``ZADD`` inside the script, and every user has one summary string, so queries are
plain ``MGET``s with no script.

Round trips. Every call is one round trip: a batch is cut into scripts of at most
``events_per_script`` events (so one script never holds Redis for long: other clients are
served between them), a read into ``MGET``s of ``users_per_read`` keys, and the commands go out
back to back on one pooled connection before the replies are read. Scripts are sent by SHA;
after a Redis restart (``NOSCRIPT``) they are loaded again and only the refused ones re-sent.

Failures. No hidden retries (``Retry(NoBackoff(), 0)``): a call either answers or raises
:class:`~presence.store.base.PresenceUnavailable` within about ``connect_timeout_s +
socket_timeout_s`` (also enforced as one overall deadline per call). Retrying is the caller's
decision (the tracker keeps a failed batch for its next flush). The URL may hold a password:
it never reaches a log line, an exception message or ``repr``.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from hiredis import pack_command
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.maint_notifications import MaintNotificationsConfig

from presence.state import (
    HEARTBEAT,
    NEVER_SEEN,
    OFFLINE,
    ONLINE,
    RETENTION_MS,
    DeviceEvent,
    Expiry,
    OnlineSample,
    Status,
    Transition,
    UserPresence,
)
from presence.store import redis_scripts
from presence.store.base import PresenceUnavailable

_FAILURES = (RedisError, OSError, TimeoutError)
# A summary is b"1:<last_seen>" (online) or b"0:<last_seen>"; its first byte, compared as an int.
_ONLINE = ord("1")


class _Script:
    """A script sent by SHA (computed here: loading it costs a round trip only after NOSCRIPT)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()


_APPLY = _Script(redis_scripts.APPLY)
_EXPIRE = _Script(redis_scripts.EXPIRE)


class RedisPresenceStore:
    """PresenceStore on one Redis (see presence/store/base.py for the contract)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "presence:",
        timeout_ms: int = 30_000,
        retention_ms: int = RETENTION_MS,
        name: str = "chat-presence",
        # Timeouts
        connect_timeout_s: float = 1.0,
        socket_timeout_s: float = 1.5,
        # Limits
        max_connections: int = 4,
        events_per_script: int = 250,
        users_per_read: int = 1000,
    ) -> None:
        if timeout_ms <= 0 or retention_ms < timeout_ms:
            raise ValueError("need 0 < timeout_ms <= retention_ms")
        # Namespace of every key (tests and benchmarks isolate themselves with it).
        self.prefix = prefix
        self._prefix = prefix.encode()
        self._deadlines = self._prefix + b"deadlines"
        self._timeout_ms = timeout_ms
        self._retention = retention_ms
        # Bounds how long one script holds Redis (every other client waits meanwhile): about
        # 1-5 ms for 250 events here.
        self._events_per_script = events_per_script
        # Keys per MGET.
        self._users_per_read = users_per_read
        # One overall deadline per call, beyond the socket timeouts (a pool wait included).
        self._call_timeout_s = connect_timeout_s + socket_timeout_s
        # Queries may run beside a flush and a sweep; waiting for a free connection is bounded.
        self._pool = BlockingConnectionPool.from_url(
            url,  # may hold a password: kept inside the pool, never logged
            max_connections=max_connections,
            timeout=connect_timeout_s,
            client_name=name,
            decode_responses=False,
            socket_connect_timeout=connect_timeout_s,
            socket_timeout=socket_timeout_s,
            retry=Retry(NoBackoff(), 0),  # no hidden retries: every call is bounded
            protocol=2,
            # With maintenance notifications on ("auto" in redis-py 8) the pool skips its check
            # for a stale connection, so the first call after a Redis restart would fail.
            maint_notifications_config=MaintNotificationsConfig(enabled=False),
        )
        self._redis = Redis(connection_pool=self._pool)

    def __repr__(self) -> str:
        return f"RedisPresenceStore(prefix={self.prefix!r}, timeout_ms={self._timeout_ms})"

    @property
    def timeout_ms(self) -> int:
        return self._timeout_ms

    # Writes

    async def apply(self, events: Sequence[DeviceEvent]) -> list[Transition]:
        if not events:
            return []
        head = (self._prefix, self._timeout_ms, self._retention)

        def calls() -> Iterator[list[Any]]:  # built one chunk at a time, between writes
            for i in range(0, len(events), self._events_per_script):
                args: list[Any] = [*head]
                for e in events[i : i + self._events_per_script]:
                    args += (b"h" if e.kind == HEARTBEAT else b"c", e.user, e.device, e.at_ms)
                yield args

        out: list[Transition] = []
        for reply in await self._run(_APPLY, calls()):
            for j in range(0, len(reply), 3):
                status: Status = ONLINE if reply[j + 1] else OFFLINE
                out.append(Transition(reply[j].decode(), status, int(reply[j + 2])))
        return out

    async def expire(self, now_ms: int, limit: int) -> Expiry:
        (reply,) = await self._run(_EXPIRE, [[self._prefix, self._timeout_ms, now_ms, limit, self._retention]])
        transitions = [Transition(reply[j].decode(), OFFLINE, int(reply[j + 1])) for j in range(1, len(reply), 2)]
        return Expiry(transitions, bool(reply[0]))

    # Reads

    async def query(self, users: Sequence[str]) -> dict[str, UserPresence]:
        out: dict[str, UserPresence] = {}
        for user, summary in zip(users, await self._summaries(users), strict=True):
            if summary is None:
                out[user] = NEVER_SEEN
            else:
                out[user] = UserPresence(ONLINE if summary[0] == _ONLINE else OFFLINE, int(summary[2:]))
        return out

    async def online_among(self, users: Sequence[str], limit: int) -> OnlineSample:
        users = list(dict.fromkeys(users))
        online = [u for u, s in zip(users, await self._summaries(users), strict=True) if s is not None and s[0] == _ONLINE]
        return OnlineSample(len(online), online[:limit])

    async def _summaries(self, users: Sequence[str]) -> list[bytes | None]:
        """Every user's summary (None: never seen): MGETs of ``users_per_read`` keys, in one write."""
        prefix = self._prefix + b"s:"
        step = self._users_per_read
        commands = [(b"MGET", *[prefix + u.encode() for u in users[i : i + step]]) for i in range(0, len(users), step)]
        try:
            async with asyncio.timeout(self._call_timeout_s):
                replies = await self._pipelined(commands)
        except _FAILURES as exc:
            raise _unavailable(exc) from None
        return [value for reply in _checked(replies) for value in reply]

    # Plumbing

    async def ping(self) -> None:
        try:
            async with asyncio.timeout(self._call_timeout_s):
                await self._redis.ping()
        except _FAILURES as exc:
            raise _unavailable(exc) from None

    async def purge(self) -> int:
        """Delete every key under this store's prefix (SCAN + UNLINK: Redis is never blocked);
        for tests, benchmarks and retiring a namespace. Returns how many keys went."""
        pattern = re.sub(rb"([\\*?\[\]])", rb"\\\1", self._prefix) + b"*"
        deleted = 0
        try:
            batch: list[bytes] = []
            async for key in self._redis.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    deleted += await self._redis.unlink(*batch)
                    batch.clear()
            if batch:
                deleted += await self._redis.unlink(*batch)
        except _FAILURES as exc:
            raise _unavailable(exc) from None
        return deleted

    async def close(self) -> None:
        try:
            async with asyncio.timeout(self._call_timeout_s):
                await self._redis.aclose()
                await self._pool.disconnect()
        except _FAILURES:
            pass  # closing: nothing left to do with a Redis that does not answer

    async def _run(self, script: _Script, calls: Iterable[list[Any]]) -> list[Any]:
        """EVALSHA ``script`` once per argument list (KEYS[1] = the deadlines), in one write:
        one round trip (two after a Redis restart forgot the script)."""
        sent: list[tuple[Any, ...]] = []

        def commands() -> Iterator[tuple[Any, ...]]:
            for args in calls:
                sent.append((b"EVALSHA", script.sha, 1, self._deadlines, *args))
                yield sent[-1]

        try:
            async with asyncio.timeout(self._call_timeout_s):
                replies = await self._pipelined(commands())
                missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
                if missing:
                    await self._redis.script_load(script.source)
                    again = await self._pipelined(sent[i] for i in missing)
                    for i, reply in zip(missing, again, strict=True):
                        replies[i] = reply
        except _FAILURES as exc:
            raise _unavailable(exc) from None
        return _checked(replies)

    async def _pipelined(self, commands: Iterable[tuple[Any, ...]]) -> list[Any]:
        """Write the commands back to back, then read their replies in order (error replies
        are returned, not raised): one round trip. Between two commands the loop gets a turn,
        so a flush of many thousand events never stalls the node's other sockets for long.
        Packed by hiredis: redis-py's own packer is pure Python, most of a 1,000-user query."""
        conn = await self._pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            count = 0
            for command in commands:
                if count:
                    await asyncio.sleep(0)
                await conn.send_packed_command(pack_command(command))
                count += 1
            replies: list[Any] = []
            for _ in range(count):
                try:
                    replies.append(await conn.read_response())
                except ResponseError as exc:  # NOSCRIPT among them
                    replies.append(exc)
        except BaseException:
            await conn.disconnect(nowait=True)  # replies may be half read: never reuse it
            raise
        finally:
            await self._pool.release(conn)
        return replies


def _checked(replies: list[Any]) -> list[Any]:
    for reply in replies:
        if isinstance(reply, Exception):
            raise _unavailable(reply)
    return replies


def _unavailable(exc: BaseException) -> PresenceUnavailable:
    # The type and Redis's own words (host:port at most), never the URL.
    detail = str(exc) or "no reply in time"
    return PresenceUnavailable(f"presence store unavailable ({type(exc).__name__}: {detail[:200]})")
