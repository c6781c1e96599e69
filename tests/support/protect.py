"""Hot-room protection in process, for unit tests: a clock to move by hand, a relay bus shared by
several "nodes", a store whose calls can be held or failed, and nodes built from them."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any

from chat import dynamic, events
from chat.errors import Unavailable
from chat.hub import Hub
from chat.models import Message, Page
from chat.protect.guard import Protection
from chat.protocol import Frame
from chat.relay.base import DeliverFn, GapFn
from chat.store.sqlite import SqliteMessageStore
from chat.waiting.memory import MemoryWaitingRooms
from discovery.config.memory import InProcessConfigStore


class Clock:
    """Seconds, moved by the test."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Bus:
    """Pub/sub between the relays of several in-process nodes (delivered on the next loop turn)."""

    def __init__(self) -> None:
        self.relays: list[BusRelay] = []


class BusRelay:
    single_node = False

    def __init__(self, bus: Bus) -> None:
        bus.relays.append(self)
        self._bus = bus
        self._topics: set[str] = set()
        self._deliver: DeliverFn | None = None
        self.published: list[tuple[str, bytes]] = []

    async def start(self, deliver: DeliverFn, on_gap: GapFn) -> None:
        self._deliver = deliver

    async def close(self) -> None: ...

    async def ping(self) -> None: ...

    async def subscribe(self, topic: str) -> None:
        self._topics.add(topic)

    async def unsubscribe(self, topic: str) -> None:
        self._topics.discard(topic)

    def hand_off(self, topic: str, payload: bytes) -> Awaitable[None]:
        self.published.append((topic, payload))
        loop = asyncio.get_running_loop()
        for relay in self._bus.relays:
            if topic in relay._topics and relay._deliver is not None:
                loop.call_soon(relay._deliver, topic, payload)
        done = loop.create_future()
        done.set_result(None)
        return done

    async def publish(self, topic: str, payload: bytes) -> None:
        await self.hand_off(topic, payload)


class HeldStore:
    """A real SQLite store whose message writes and history reads can be held (``hold``) or failed
    (``fail``), counting every call."""

    def __init__(self, inner: SqliteMessageStore) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self.hold: asyncio.Event | None = None  # set: calls proceed
        self.fail = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def _gate(self, what: str) -> None:
        self.calls[what] += 1
        if self.hold is not None:
            await self.hold.wait()
        if self.fail:
            raise Unavailable("the test failed it", retry_after_ms=500)

    async def insert_message(self, message: Message) -> tuple[Message, bool]:
        await self._gate("insert_message")
        return await self.inner.insert_message(message)

    async def insert_messages(self, messages: Sequence[Message]) -> list[tuple[Message, bool]]:
        await self._gate("insert_messages")
        return await self.inner.insert_messages(messages)

    async def history(self, channel_id: int, *, before: int | None = None, after: int | None = None, limit: int = 50) -> Page:
        await self._gate("history")
        return await self.inner.history(channel_id, before=before, after=after, limit=limit)


class Sink:
    """A hub subscriber that records what reaches it."""

    def __init__(self, user: str = "sink") -> None:
        self.user = user
        self.session_id = f"s-{user}"
        self.frames: list[tuple[str, int, Frame]] = []

    def deliver_message(self, channel: int, message_id: int, frame: Frame) -> None:
        self.frames.append(("message", channel, frame))

    def deliver_ephemeral(self, channel: int, frame: Frame) -> None:
        self.frames.append(("ephemeral", channel, frame))

    def deliver_control(self, frame: Frame) -> None:
        self.frames.append(("control", 0, frame))

    def deliver_presence(self, user: str, stamp: int, frame: Frame) -> None:
        self.frames.append(("presence", 0, frame))

    def gap(self, channel: int) -> None:
        self.frames.append(("gap", channel, Frame(b"")))

    def kicked(self, channel: int, frame: Frame) -> bool:
        return False


class TestNode:
    """One node's protection, hub and config over a shared bus."""

    __test__ = False

    def __init__(self, name: str, bus: Bus, clock: Clock, store: Any, *, guard_store: bool = False) -> None:
        self.relay = BusRelay(bus)
        self.config = InProcessConfigStore(dynamic.SCHEMA)
        self.lines = MemoryWaitingRooms(clock=clock)
        self.protection = Protection(
            node_id=name, store=store, relay=self.relay, lines=self.lines, guard_store=guard_store, guard_relay=False, wait_s=2.0, clock=clock
        )
        self.hub = Hub(self.protection.relay, policy=self.protection.fanout)

    async def start(self, **settings: object) -> TestNode:
        await self.config.start()
        if settings:
            await self.config.set(settings)
        await self.hub.start()
        await self.protection.start(self.hub, self.config)
        return self

    async def close(self) -> None:
        await self.protection.close()

    def envelope(self, channel: int, message: Message) -> None:
        """A live message of ``channel`` arriving from the relay."""
        from chat.service import _relay_payload

        self.hub._deliver(f"c:{channel}", _relay_payload(message))

    def typing(self, channel: int) -> None:
        self.hub._deliver(f"c:{channel}", events.pack(events.TYPING, channel, 0, "other", b'{"op":"typing"}'))


async def sqlite(tmp_path: Path) -> SqliteMessageStore:
    store = SqliteMessageStore(tmp_path / "chat.sqlite3")
    await store.open()
    return store


async def settle() -> None:
    """Let the loop run the callbacks and tasks that are ready (relay deliveries, spawned work)."""
    for _ in range(5):
        await asyncio.sleep(0)
