"""The message path's hand-off between store, relay and ack (MessageService on the SQLite
store, with a recording relay of our own port and the real in-process relay — the Redis
adapter is tested for real in tests/integration). ``send`` returns when the caller may ack."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chat import commands, events
from chat.access import Access
from chat.channels import ChannelService
from chat.errors import Unavailable
from chat.gaps import GapAnnouncer
from chat.minter import FixedWorker, IdMinter
from chat.models import Principal
from chat.relay.base import DeliverFn, GapFn, Relay
from chat.relay.local import LocalRelay
from chat.service import MessageLimits, MessageService
from chat.store.sqlite import SqliteMessageStore


class RecordingRelay:
    """Records hand-offs; fails the next ``fail`` of them; with ``hold`` it leaves their
    confirmations pending in ``held`` until the test resolves them."""

    single_node = False

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.fail = 0
        self.hold = False
        self.held: list[asyncio.Future[None]] = []
        self.changed = asyncio.Event()

    async def start(self, deliver: DeliverFn, on_gap: GapFn) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...
    async def subscribe(self, topic: str) -> None: ...
    async def unsubscribe(self, topic: str) -> None: ...

    def hand_off(self, topic: str, payload: bytes) -> asyncio.Future[None]:
        if self.fail:
            self.fail -= 1
            raise Unavailable("relay unavailable")
        self.published.append((topic, payload))
        self.changed.set()
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.hold:
            self.held.append(confirmed)
        else:
            confirmed.set_result(None)
        return confirmed

    async def publish(self, topic: str, payload: bytes) -> None:
        await self.hand_off(topic, payload)

    async def until(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self.published) < count:
                self.changed.clear()
                await self.changed.wait()


ALICE = Principal("alice")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteMessageStore]:
    s = SqliteMessageStore(tmp_path / "chat.sqlite3")
    await s.open()
    yield s
    await s.close()


async def service_with(store: SqliteMessageStore, relay: Relay) -> tuple[MessageService, int]:
    minter, access = IdMinter(FixedWorker(1)), Access(store)
    service = MessageService(store=store, relay=relay, minter=minter, access=access, limits=MessageLimits())
    channels = ChannelService(store=store, relay=relay, minter=minter, access=access, group_max_members=100)
    view = await channels.create(ALICE, commands.CreateChannel("group", "g", ()))
    return service, view.channel.id


def send(channel: int, text: str, key: str) -> commands.Send:
    return commands.Send(None, channel, text, key)


async def test_ack_comes_before_the_fan_out_on_the_in_process_relay(store: SqliteMessageStore) -> None:
    """In-process, publishing is the local fan-out: the ack must not wait behind a large room,
    so the relay confirms at once and delivers on the next loop turn."""
    relay = LocalRelay()
    delivered: list[bytes] = []
    await relay.start(lambda topic, payload: delivered.append(payload), lambda topics: None)
    service, ch = await service_with(store, relay)
    await relay.subscribe(f"c:{ch}")
    message, created = await service.send(ALICE, send(ch, "hello", "k1"))
    assert created and delivered == []  # the caller acks now, before any socket got it
    await asyncio.sleep(0)  # one loop turn: the fan-out
    assert [events.unpack(p).message_id for p in delivered] == [message.id]
    # An idempotent retry is acked at once and not published again.
    again, created = await service.send(ALICE, send(ch, "hello", "k1"))
    await asyncio.sleep(0)
    assert not created and again == message and len(delivered) == 1
    await service.close()
    await relay.close()


async def test_ack_waits_for_the_publish_on_a_shared_relay(store: SqliteMessageStore) -> None:
    """The ack promises the message is on its way to every node first."""
    relay = RecordingRelay()
    service, ch = await service_with(store, relay)
    await service.send(ALICE, send(ch, "hello", "k1"))
    assert len(relay.published) == 1
    await service.send(ALICE, send(ch, "hello", "k1"))  # a retry: not published again
    assert len(relay.published) == 1
    await service.close()


async def test_a_message_that_could_not_be_published_is_announced_as_a_gap(store: SqliteMessageStore) -> None:
    relay = RecordingRelay()
    service, ch = await service_with(store, relay)
    relay.fail = 3  # the message's publish, then two gap attempts
    message, created = await service.send(ALICE, send(ch, "lost live", "k1"))
    assert created  # stored, so acked
    assert (await store.history(ch, before=None, after=None, limit=10)).messages[0].id == message.id
    await relay.until(1)
    topic, payload = relay.published[0]
    env = events.unpack(payload)
    assert topic == f"c:{ch}" and env.kind == events.GAP and env.channel == ch
    assert service.gaps_owed == 0
    await service.close()


async def test_a_miss_during_an_announcement_is_announced_again() -> None:
    relay = RecordingRelay()
    gaps = GapAnnouncer(relay)
    gaps.missed(7)
    gaps.missed(8)
    gaps.missed(7)  # still one entry for 7
    await relay.until(2)
    assert [events.unpack(p).channel for _, p in relay.published] == [7, 8]
    # A miss that lands while 9's announcement is in flight may postdate it: 9 goes out twice.
    original = relay.publish

    async def publish_and_miss(topic: str, payload: bytes) -> None:
        relay.publish = original  # type: ignore[method-assign]
        gaps.missed(9)
        await original(topic, payload)

    relay.publish = publish_and_miss  # type: ignore[method-assign]
    gaps.missed(9)
    await relay.until(4)
    assert [events.unpack(p).channel for _, p in relay.published[2:]] == [9, 9]
    assert gaps.owed == 0
    await gaps.close()


async def test_the_next_message_is_handed_off_before_the_previous_one_is_confirmed(store: SqliteMessageStore) -> None:
    """A hot channel is not held to one publish per broker round trip; acks still wait for
    their own confirmation, and hand-off order is ID order."""
    relay = RecordingRelay()
    service, ch = await service_with(store, relay)
    relay.hold = True
    sends = [asyncio.ensure_future(service.send(ALICE, send(ch, f"m{i}", f"k{i}"))) for i in range(5)]
    await relay.until(5)  # all five handed off while no confirmation has come
    assert not any(s.done() for s in sends) and len(relay.held) == 5
    ids = [events.unpack(p).message_id for _, p in relay.published]
    assert ids == sorted(ids)
    for confirmation in relay.held:
        confirmation.set_result(None)
    acked = [message.id for message, _ in await asyncio.wait_for(asyncio.gather(*sends), 5)]
    assert sorted(acked) == ids
    await service.close()


async def test_a_confirmation_that_fails_is_announced_as_a_gap(store: SqliteMessageStore) -> None:
    relay = RecordingRelay()
    service, ch = await service_with(store, relay)
    relay.hold = True
    sending = asyncio.ensure_future(service.send(ALICE, send(ch, "x", "k1")))
    await relay.until(1)
    relay.hold = False
    relay.held[0].set_exception(Unavailable("relay unavailable"))
    _, created = await asyncio.wait_for(sending, 5)
    assert created  # stored and acked although its publish failed
    await relay.until(2)
    env = events.unpack(relay.published[1][1])
    assert (env.kind, env.channel) == (events.GAP, ch)
    await service.close()


async def test_a_retry_of_a_message_another_node_minted_announces_a_gap(store: SqliteMessageStore) -> None:
    """The node that stored the original may have died before publishing it: the retry, answered
    from the store on another node, tells the channel's sockets to resync. A retry of our own
    message (we published it) announces nothing."""
    relay = RecordingRelay()
    service, ch = await service_with(store, relay)
    ours, _ = await service.send(ALICE, send(ch, "mine", "k-ours"))
    await service.send(ALICE, send(ch, "mine", "k-ours"))
    assert [events.unpack(p).kind for _, p in relay.published] == [events.MESSAGE]
    # A message stored by another node (worker 9) that never published it.
    from chat.models import Message

    foreign_id = ((ours.id >> 22) << 22) | (9 << 12)  # the same millisecond, worker 9
    await store.insert_message(Message(foreign_id, ch, "alice", "orphan", 0, "k-orphan"))
    again, created = await service.send(ALICE, send(ch, "orphan", "k-orphan"))
    assert not created and again.id == foreign_id
    await relay.until(2)
    env = events.unpack(relay.published[1][1])
    assert (env.kind, env.channel) == (events.GAP, ch)
    await service.close()
