"""Delivery (chat/notify/delivery.py + webhook.py) with an injected clock: the real SQLite outbox,
the real Webhook client, and httpx's in-process transport standing in for the network."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from chat.notify.delivery import Deliverer
from chat.notify.retry import RetryPolicy
from chat.notify.signing import verify
from chat.notify.webhook import Webhook
from chat.store.outbox import Notification, OutboxItem
from chat.store.sqlite import SqliteMessageStore

SECRET = "w" * 40
T0 = 1_750_000_000_000  # ms
POLICY = RetryPolicy(max_attempts=4, max_age_ms=600_000, base_s=1.0, cap_s=300.0)


class Clock:
    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> int:
        return self.ms


class Receiver:
    """Answers each request with the next status of ``script`` (then 204) and records it."""

    def __init__(self, *script: int, headers: dict[str, str] | None = None) -> None:
        self.script = list(script)
        self.headers = headers or {}
        self.requests: list[httpx.Request] = []
        self.arrived = asyncio.Event()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.arrived.set()
        status = self.script.pop(0) if self.script else 204
        return httpx.Response(status, headers=self.headers if status >= 400 else {}, content=b"ok")


@pytest.fixture
def store(sqlite_store: SqliteMessageStore) -> SqliteMessageStore:
    return sqlite_store


@pytest.fixture
async def make(store: SqliteMessageStore) -> AsyncIterator[Callable[..., Deliverer]]:
    hooks: list[Webhook] = []

    def build(receiver: Receiver, clock: Clock, **kwargs: object) -> Deliverer:
        hook = Webhook("https://push.example/hook?token=hunter2", SECRET, clock_s=lambda: clock.ms / 1000, transport=httpx.MockTransport(receiver))
        hooks.append(hook)
        return Deliverer(store, hook, POLICY, clock_ms=clock, jitter=lambda: 0.0, **kwargs)  # type: ignore[arg-type]

    yield build
    for hook in hooks:
        await hook.close()


def note(n: int, created_ms: int = T0) -> Notification:
    return Notification(f"{n}:bob", "bob", b'{"id": "%d:bob"}' % n, created_ms)


async def test_a_delivery_is_signed_keyed_and_deleted(store: SqliteMessageStore, make: Callable[..., Deliverer]) -> None:
    receiver, clock = Receiver(), Clock()
    deliverer = make(receiver, clock)
    await deliverer._sender.open()  # type: ignore[attr-defined]
    await store.outbox_put([note(1)])
    assert await deliverer.run_once() == 1
    (request,) = receiver.requests
    assert request.method == "POST" and str(request.url) == "https://push.example/hook?token=hunter2"
    assert request.content == b'{"id": "1:bob"}'
    assert request.headers["Idempotency-Key"] == "1:bob"
    assert request.headers["X-Chat-Attempt"] == "1"
    assert request.headers["Content-Type"] == "application/json"
    assert verify(request.headers["X-Chat-Signature"], request.content, SECRET, now_s=T0 // 1000)
    assert not verify(request.headers["X-Chat-Signature"], request.content, "other" * 8, now_s=T0 // 1000)
    assert deliverer.delivered == 1
    clock.ms += 3_600_000
    assert await deliverer.run_once() == 0  # deleted: never again


async def test_backoff_schedule_then_give_up(
    store: SqliteMessageStore, make: Callable[..., Deliverer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="chat.notify")
    receiver, clock = Receiver(500, 500, 500, 500, 500), Clock()
    deliverer = make(receiver, clock)
    await deliverer._sender.open()  # type: ignore[attr-defined]
    await store.outbox_put([note(1)])
    # Jitter 0: waits of 0.5 s, 1 s, 2 s after attempts 1, 2, 3; attempt 4 is the last.
    for attempt, wait_ms in [(1, 500), (2, 1000), (3, 2000)]:
        assert await deliverer.run_once() == 1
        clock.ms += wait_ms - 1
        assert await deliverer.run_once() == 0, f"retried before its backoff after attempt {attempt}"
        clock.ms += 1
    assert await deliverer.run_once() == 1
    assert [r.headers["X-Chat-Attempt"] for r in receiver.requests] == ["1", "2", "3", "4"]
    assert len({r.headers["Idempotency-Key"] for r in receiver.requests}) == 1
    assert deliverer.given_up == 1
    clock.ms += 3_600_000
    assert await deliverer.run_once() == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([w for w in warnings if "push webhook https://push.example failing: HTTP 500" in w]) == 1  # once per outage
    assert len([w for w in warnings if "gave up 1 notification(s), e.g. 1:bob (after 4 attempts, last: HTTP 500)" in w]) == 1
    assert not any("hunter2" in r.getMessage() for r in caplog.records)  # the URL's token never reaches the log


async def test_retry_after_is_honoured(store: SqliteMessageStore, make: Callable[..., Deliverer]) -> None:
    receiver, clock = Receiver(503, headers={"Retry-After": "7"}), Clock()
    deliverer = make(receiver, clock)
    await deliverer._sender.open()  # type: ignore[attr-defined]
    await store.outbox_put([note(1)])
    assert await deliverer.run_once() == 1
    clock.ms += 6_999
    assert await deliverer.run_once() == 0
    clock.ms += 1
    assert await deliverer.run_once() == 1
    assert deliverer.delivered == 1


async def test_an_item_past_its_age_is_dropped_unsent(store: SqliteMessageStore, make: Callable[..., Deliverer]) -> None:
    receiver, clock = Receiver(500), Clock()
    deliverer = make(receiver, clock)
    await deliverer._sender.open()  # type: ignore[attr-defined]
    await store.outbox_put([note(1)])
    assert await deliverer.run_once() == 1  # fails, rescheduled after 0.5 s
    clock.ms = T0 + POLICY.max_age_ms  # the node was away; now the item is too old to send
    assert await deliverer.run_once() == 1
    assert len(receiver.requests) == 1 and deliverer.given_up == 1


async def test_a_recovery_is_logged_once(store: SqliteMessageStore, make: Callable[..., Deliverer], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="chat.notify")
    receiver, clock = Receiver(500, 502), Clock()
    deliverer = make(receiver, clock)
    await deliverer._sender.open()  # type: ignore[attr-defined]
    await store.outbox_put([note(1)])
    for _ in range(3):
        await deliverer.run_once()
        clock.ms += 10_000
    lines = [r.getMessage() for r in caplog.records]
    assert len([m for m in lines if "failing" in m]) == 1
    assert len([m for m in lines if "answering again" in m and "(2 failed attempts)" in m]) == 1


async def test_only_the_leader_delivers(store: SqliteMessageStore, make: Callable[..., Deliverer]) -> None:
    receiver, leading = Receiver(), [False]
    deliverer = make(receiver, Clock(), is_leader=lambda: leading[0], poll_s=0.01)
    await deliverer._sender.open()  # type: ignore[attr-defined]
    await store.outbox_put([note(1)])
    await deliverer.start()
    try:
        deliverer.nudge()
        await asyncio.sleep(0.3)  # a negative: no event marks "did not deliver"; 30 polls passed
        assert receiver.requests == []
        leading[0] = True
        deliverer.nudge()
        await asyncio.wait_for(receiver.arrived.wait(), 5)
    finally:
        await deliverer.close()
    assert len(receiver.requests) == 1


class BrokenBody(httpx.AsyncByteStream):
    """A response body that breaks after its first bytes."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"accepted"
        raise httpx.ReadError("connection reset")


async def test_a_2xx_counts_even_if_its_body_breaks_off_and_silence_is_a_timeout() -> None:
    async def answer(request: httpx.Request) -> httpx.Response:
        if request.headers["Idempotency-Key"] == "slow":
            await asyncio.sleep(30)  # never answers within the timeout
        return httpx.Response(202, stream=BrokenBody())

    hook = Webhook("http://push.example/", SECRET, transport=httpx.MockTransport(answer), timeout_s=0.2)
    await hook.open()
    try:
        ok = await hook.post(item("fine"))
        slow = await hook.post(item("slow"))
    finally:
        await hook.close()
    assert (ok.delivered, ok.detail) == (True, "HTTP 202")
    assert (slow.delivered, slow.detail) == (False, "no answer within 0.2 s")


def item(key: str) -> OutboxItem:
    return OutboxItem(key, "bob", b"{}", T0, T0, 1)
