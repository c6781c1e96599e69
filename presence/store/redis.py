"""Redis PresenceStore (``redis.asyncio`` with hiredis): presence shared by every node.

The rules are those of presence/state.py, run by the Lua scripts of
:mod:`presence.store.redis_scripts` (key layout there), each atomic in Redis.

Round trips. Every call is one round trip: a batch is cut into scripts of at most ``chunk``
events or users (so one script never holds Redis for long, other clients get served between
them) and the scripts go out in one pipeline. Scripts are sent by SHA; after a Redis restart
(``NOSCRIPT``) they are loaded again and only the refused ones re-sent, once.

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
from collections.abc import Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError
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


class _Script:
    """A script sent by SHA (computed here: loading it costs a round trip only after NOSCRIPT)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


_APPLY = _Script(redis_scripts.APPLY)
_EXPIRE = _Script(redis_scripts.EXPIRE)
_QUERY = _Script(redis_scripts.QUERY)


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
        chunk: int = 1000,
    ) -> None:
        if timeout_ms <= 0 or retention_ms < timeout_ms:
            raise ValueError("need 0 < timeout_ms <= retention_ms")
        # Namespace of every key (tests and benchmarks isolate themselves with it).
        self.prefix = prefix
        self._prefix = prefix.encode()
        self._deadlines = self._prefix + b"deadlines"
        self._timeout_ms = timeout_ms
        self._retention = b"%d" % retention_ms
        # Events or users per script: bounds how long one script holds Redis.
        self._chunk = chunk
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
        head = [self._prefix, b"%d" % self._timeout_ms, self._retention]
        calls: list[list[Any]] = []
        for i in range(0, len(events), self._chunk):
            args: list[Any] = list(head)
            for e in events[i : i + self._chunk]:
                args += (b"h" if e.kind == HEARTBEAT else b"c", e.user, e.device, e.at_ms)
            calls.append(args)
        out: list[Transition] = []
        for reply in await self._run(_APPLY, calls):
            for j in range(0, len(reply), 3):
                status: Status = ONLINE if reply[j + 1] else OFFLINE
                out.append(Transition(reply[j].decode(), status, int(reply[j + 2])))
        return out

    async def expire(self, now_ms: int, limit: int) -> Expiry:
        (reply,) = await self._run(_EXPIRE, [[self._prefix, self._timeout_ms, now_ms, limit]])
        transitions = [Transition(reply[j].decode(), OFFLINE, int(reply[j + 1])) for j in range(1, len(reply), 2)]
        return Expiry(transitions, bool(reply[0]))

    # Reads

    async def query(self, users: Sequence[str], now_ms: int) -> dict[str, UserPresence]:
        out: dict[str, UserPresence] = {}
        for user, (online, seen) in zip(users, await self._statuses(users, now_ms)):
            if seen is None:
                out[user] = NEVER_SEEN
            else:
                out[user] = UserPresence(ONLINE if online else OFFLINE, int(seen))
        return out

    async def online_among(self, users: Sequence[str], now_ms: int, limit: int) -> OnlineSample:
        users = list(dict.fromkeys(users))
        online = [u for u, (live, _) in zip(users, await self._statuses(users, now_ms)) if live]
        return OnlineSample(len(online), online[:limit])

    async def _statuses(self, users: Sequence[str], now_ms: int) -> list[tuple[int, bytes | None]]:
        if not users:
            return []
        head = [self._prefix, self._timeout_ms, now_ms]
        calls = [head + list(users[i : i + self._chunk]) for i in range(0, len(users), self._chunk)]
        flat = [x for reply in await self._run(_QUERY, calls, keys=0) for x in reply]
        return list(zip(flat[0::2], flat[1::2]))

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

    async def _run(self, script: _Script, calls: list[list[Any]], *, keys: int = 1) -> list[Any]:
        """EVALSHA ``script`` once per argument list, pipelined: one round trip (two after a
        Redis restart forgot the script). ``keys`` = 1 passes the deadlines key as KEYS[1]."""
        key_args = [1, self._deadlines] if keys else [0]
        try:
            async with asyncio.timeout(self._call_timeout_s):
                replies = await self._pipelined(script.sha, key_args, calls)
                missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
                if missing:
                    await self._redis.script_load(script.source)
                    again = await self._pipelined(script.sha, key_args, [calls[i] for i in missing])
                    for i, reply in zip(missing, again):
                        replies[i] = reply
        except _FAILURES as exc:
            raise _unavailable(exc) from None
        for reply in replies:
            if isinstance(reply, Exception):
                raise _unavailable(reply)
        return replies

    async def _pipelined(self, sha: str, key_args: list[Any], calls: list[list[Any]]) -> list[Any]:
        if len(calls) == 1:  # no pipeline object for the common case
            try:
                return [await self._redis.execute_command("EVALSHA", sha, *key_args, *calls[0])]  # type: ignore[no-untyped-call]
            except NoScriptError as exc:
                return [exc]
        pipe = self._redis.pipeline(transaction=False)
        for args in calls:
            pipe.execute_command("EVALSHA", sha, *key_args, *args)
        return list(await pipe.execute(raise_on_error=False))


def _unavailable(exc: BaseException) -> PresenceUnavailable:
    # The type and Redis's own words (host:port at most), never the URL.
    detail = str(exc) or "no reply in time"
    return PresenceUnavailable(f"presence store unavailable ({type(exc).__name__}: {detail[:200]})")
