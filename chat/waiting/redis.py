"""Redis waiting rooms: every node sees one line per room, and a restarted node loses no place.

Each call is one Lua script (:mod:`chat.waiting.redis_scripts`, key layout there), atomic in
Redis, so nodes admitting the same room at once still admit in arrival order and within the
budget of each second, which is the Redis server's clock second (every node counts the same
seconds). Scripts go by SHA and are loaded again after a Redis restart (``NOSCRIPT``). No
hidden retries: a call answers or raises :class:`~chat.errors.Unavailable` within about
``connect_timeout_s + socket_timeout_s``. The URL may hold a password: never logged.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.maint_notifications import MaintNotificationsConfig

from chat.errors import Unavailable
from chat.hot import retry_ms
from chat.waiting import redis_scripts
from chat.waiting.base import Admission, Admitted, Full, LineRules, Queued

_FAILURES = (RedisError, OSError, TimeoutError)


class RedisWaitingRooms:
    """The WaitingRooms port on one Redis (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "wr:",
        clock: Callable[[], float] | None = None,
        # Timeouts
        connect_timeout_s: float = 1.0,
        socket_timeout_s: float = 1.5,
        # Limits
        max_connections: int = 16,
        max_steps: int = 10_000,
    ) -> None:
        self._prefix = prefix  # namespace of every key (tests isolate themselves with it)
        self._clock = clock  # tests only: seconds; None: the Redis server's clock
        self._call_timeout_s = connect_timeout_s + socket_timeout_s
        self._max_steps = max_steps  # places one admission pass looks at (lapsed ones are skipped)
        # A burst of joins (hundreds at once, each one short script) waits for a free connection
        # within the call's own bound rather than failing after the connect timeout.
        self._pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=self._call_timeout_s,
            client_name="chat-waiting",
            decode_responses=True,
            socket_connect_timeout=connect_timeout_s,
            socket_timeout=socket_timeout_s,
            retry=Retry(NoBackoff(), 0),
            protocol=2,
            maint_notifications_config=MaintNotificationsConfig(enabled=False),
        )
        self._redis = Redis(connection_pool=self._pool)
        self._arrive = self._redis.register_script(redis_scripts.ARRIVE)
        self._admit = self._redis.register_script(redis_scripts.ADMIT)
        self._redeem = self._redis.register_script(redis_scripts.REDEEM)
        self._cancel = self._redis.register_script(redis_scripts.CANCEL)

    def _keys(self, room: int) -> list[str]:
        base = f"{self._prefix}{{{room}}}:"
        return [base + name for name in ("seq", "q", "exp", "t", "tx", "slot")]

    def _now(self) -> str:
        return "" if self._clock is None else str(math.floor(self._clock() * 1000))

    async def _call(self, script: Any, keys: Sequence[str], args: Sequence[object]) -> Any:
        try:
            async with asyncio.timeout(self._call_timeout_s):
                return await script(keys=keys, args=args)
        except _FAILURES:
            raise Unavailable("the waiting room is unavailable right now", retry_after_ms=1000) from None

    async def arrive(self, room: int, user: str, rules: LineRules) -> Admitted | Queued | Full:
        keep_s = math.ceil(max(rules.ticket_ttl_s, rules.entry_ttl_s)) + 60
        args = [self._now(), rules.budget_per_s, user, rules.max_queue, _ms(rules.ticket_ttl_s), _ms(rules.entry_ttl_s), keep_s]
        answer = await self._call(self._arrive, self._keys(room), args)
        if answer[0] == "admitted":
            return Admitted(str(answer[1]), int(answer[2]))
        if answer[0] == "full":
            return Full(retry_ms(int(answer[1]) / max(rules.budget_per_s, 1)))
        return Queued(int(answer[1]))

    async def redeem(self, room: int, user: str, ticket: str) -> bool:
        return bool(await self._call(self._redeem, self._keys(room), [self._now(), 0, user, ticket]))

    async def admit(self, room: int, rules: LineRules) -> tuple[list[Admission], float | None]:
        args = [self._now(), rules.budget_per_s, _ms(rules.ticket_ttl_s), self._max_steps]
        answer: list[Any] = await self._call(self._admit, self._keys(room), args)
        flat: list[str] = answer[0]
        wait_ms, ttl = int(answer[1]), _ms(rules.ticket_ttl_s)
        admitted = [Admission(flat[i], str(int(float(flat[i + 1]))), ttl) for i in range(0, len(flat), 2)]
        return admitted, None if wait_ms < 0 else wait_ms / 1000

    async def cancel(self, room: int, user: str) -> bool:
        keys = self._keys(room)
        return bool(await self._call(self._cancel, [keys[1], keys[2]], [user]))

    async def position(self, room: int, user: str) -> int | None:
        try:
            async with asyncio.timeout(self._call_timeout_s):
                rank: Any = await self._redis.zrank(self._keys(room)[1], user)
        except _FAILURES:
            raise Unavailable("the waiting room is unavailable right now", retry_after_ms=1000) from None
        return None if rank is None else int(rank) + 1

    async def close(self) -> None:
        try:
            await self._redis.aclose()
            await self._pool.disconnect()
        except _FAILURES:
            pass


def _ms(seconds: float) -> int:
    return math.ceil(seconds * 1000)
