"""The relay's breaker: a Redis the relay knows is away (publishes refused at once) is the relay's
business; one that takes publishes and then fails them trips the breaker, which then fails fast."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from chat.errors import Unavailable
from chat.hot.breaker import Breaker, BreakerConfig, Health
from chat.protect.breakers import GuardedRelay
from tests.support.protect import Clock


class FlakyRelay:
    single_node = False

    def __init__(self) -> None:
        self.mode = "ok"  # "ok", "down" (refused at once), "failing" (taken, then fails)
        self.taken = 0

    def hand_off(self, topic: str, payload: bytes) -> Awaitable[None]:
        if self.mode == "down":
            raise Unavailable("relay unavailable")
        self.taken += 1
        future = asyncio.get_running_loop().create_future()
        if self.mode == "failing":
            future.set_exception(Unavailable("no reply"))
        else:
            future.set_result(None)
        return future


async def publish_many(relay: GuardedRelay, n: int) -> int:
    """Publish ``n`` times; how many were refused."""
    refused = 0
    for _ in range(n):
        try:
            await relay.hand_off("c:1", b"x")
        except Unavailable:
            refused += 1
    return refused


async def test_a_relay_that_knows_redis_is_away_does_not_trip_the_breaker_one_that_fails_publishes_does() -> None:
    clock, inner = Clock(), FlakyRelay()
    breaker = Breaker("redis", BreakerConfig(min_requests=5, open_s=1.0, max_open_s=1.0, probes=1))
    relay = GuardedRelay(inner, breaker, clock=clock, on_transition=lambda t: None)  # type: ignore[arg-type]
    assert await publish_many(relay, 10) == 0
    inner.mode = "down"
    assert await publish_many(relay, 50) == 50 and breaker.health is Health.HEALTHY
    inner.mode = "ok"
    assert await publish_many(relay, 3) == 0  # back: at once, nothing to wait out
    inner.mode = "failing"
    await publish_many(relay, 30)
    assert breaker.health is Health.CRITICAL
    taken = inner.taken
    assert await publish_many(relay, 20) == 20 and inner.taken == taken  # fails fast: nothing reaches the relay
    inner.mode, clock.now = "ok", clock.now + 1.0
    assert await publish_many(relay, 2) == 0 and breaker.health is Health.HEALTHY  # one probe, and back
