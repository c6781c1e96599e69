"""Who gets a notification (chat/notify/enqueue.py), on real embedded adapters: the SQLite store
and the presence tracker over the in-memory presence store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from chat.config import from_env
from chat.ids import SnowflakeGenerator, timestamp_ms
from chat.models import Channel, ChannelKind, Message
from chat.notify.enqueue import Enqueuer
from chat.notify.notifier import build_notifier
from chat.store.sqlite import SqliteMessageStore
from presence.store.memory import MemoryPresenceStore
from presence.tracker import PresenceTracker

IDS = SnowflakeGenerator(3)
FAR_FUTURE_MS = 1 << 50


@pytest.fixture
def store(sqlite_store: SqliteMessageStore) -> SqliteMessageStore:
    return sqlite_store


@pytest.fixture
async def presence() -> AsyncIterator[PresenceTracker]:
    tracker = PresenceTracker(MemoryPresenceStore(timeout_ms=30_000), heartbeat_s=5)
    yield tracker
    await tracker.close()


async def group(store: SqliteMessageStore, members: list[str], kind: ChannelKind = ChannelKind.GROUP) -> Channel:
    cid = IDS.next_id_blocking()
    channel = Channel(cid, kind, f"{kind.value} {cid}", members[0], timestamp_ms(cid))
    await store.create_channel(channel, members)
    return channel


async def dm(store: SqliteMessageStore, a: str, b: str) -> Channel:
    low, high = sorted((a, b))
    cid = IDS.next_id_blocking()
    channel, _ = await store.get_or_create_dm(
        Channel(cid, ChannelKind.DM, f"{low}, {high}", a, timestamp_ms(cid), dm_key=f"{low}\n{high}"), (low, high)
    )
    return channel


def message(channel: Channel, sender: str, text: str) -> Message:
    mid = IDS.next_id_blocking()
    return Message(mid, channel.id, sender, text, timestamp_ms(mid), f"k{mid}")


async def outbox(store: SqliteMessageStore) -> list[tuple[str, dict[str, Any]]]:
    """Everything in the outbox (claimed, so call once per test step)."""
    items = await store.outbox_claim(FAR_FUTURE_MS, limit=1000, lease_ms=1, oldest_ms=0)
    return [(item.recipient, orjson.loads(item.body)) for item in items]


async def test_a_dm_to_an_offline_user_is_enqueued_with_its_body(store: SqliteMessageStore, presence: PresenceTracker) -> None:
    channel = await dm(store, "alice", "bob")
    m = message(channel, "alice", "x" * 250)
    notes = await Enqueuer(store, presence).process([m])
    assert [n.id for n in notes] == [f"{m.id}:bob"]
    assert await outbox(store) == [
        (
            "bob",
            {
                "id": f"{m.id}:bob",
                "reason": "dm",
                "recipient": "bob",
                "sender": "alice",
                "channel": {"id": str(channel.id), "kind": "dm", "name": "alice, bob"},
                "message": {"id": str(m.id), "ts": m.ts, "preview": "x" * 200, "truncated": True},
            },
        )
    ]


async def test_an_online_recipient_gets_nothing(store: SqliteMessageStore, presence: PresenceTracker) -> None:
    channel = await dm(store, "alice", "bob")
    await presence.connected("bob", "phone")
    assert await Enqueuer(store, presence).process([message(channel, "alice", "hi")]) == []
    await presence.disconnected("bob", "phone")  # a clean close: offline at once
    assert [n.recipient for n in await Enqueuer(store, presence).process([message(channel, "bob", "hi")])] == ["alice"]
    assert [r for r, _ in await outbox(store)] == ["alice"]


async def test_a_mention_notifies_only_mentioned_offline_members(store: SqliteMessageStore, presence: PresenceTracker) -> None:
    channel = await group(store, ["alice", "bob", "carol", "dave"])
    await presence.connected("bob", "laptop")
    text = "@bob @carol @erin and @alice: see alice@example.com"  # erin is no member; alice is the sender
    notes = await Enqueuer(store, presence).process([message(channel, "alice", text)])
    assert [(n.recipient, orjson.loads(n.body)["reason"]) for n in notes] == [("carol", "mention")]
    assert await Enqueuer(store, presence).process([message(channel, "alice", "no mention, dave")]) == []


async def test_rooms_notify_mentioned_members_too(store: SqliteMessageStore, presence: PresenceTracker) -> None:
    room = await group(store, ["alice", "bob"], ChannelKind.ROOM)
    notes = await Enqueuer(store, presence).process([message(room, "alice", "ping @bob")])
    assert [(n.recipient, orjson.loads(n.body)["channel"]["kind"]) for n in notes] == [("bob", "room")]


async def test_processing_a_message_twice_is_one_notification(store: SqliteMessageStore, presence: PresenceTracker) -> None:
    channel = await dm(store, "alice", "bob")
    m = message(channel, "alice", "hi")
    enqueuer = Enqueuer(store, presence)
    await enqueuer.process([m, m])
    await enqueuer.process([m])
    assert [r for r, _ in await outbox(store)] == ["bob"]


async def test_one_presence_query_for_a_batch(store: SqliteMessageStore, presence: PresenceTracker) -> None:
    channel = await group(store, ["alice", "bob", "carol"])
    queries: list[list[str]] = []
    query = presence.query

    async def counting(users: Any) -> Any:
        queries.append(list(users))
        return await query(users)

    presence.query = counting  # type: ignore[method-assign]
    batch = [message(channel, "alice", "@bob"), message(channel, "bob", "@carol @alice"), message(channel, "carol", "@bob")]
    notes = await Enqueuer(store, presence).process(batch)
    assert queries == [["alice", "bob", "carol"]]
    assert sorted(n.recipient for n in notes) == ["alice", "bob", "bob", "carol"]


async def test_presence_down_means_notify(store: SqliteMessageStore, caplog: pytest.LogCaptureFixture) -> None:
    """A presence store that cannot answer (a real Redis adapter pointed at a closed port):
    everyone counts as offline — an extra push rather than a missed one — logged once."""
    from presence.store.redis import RedisPresenceStore

    down = PresenceTracker(RedisPresenceStore("redis://127.0.0.1:1/0", timeout_ms=30_000), heartbeat_s=5, call_timeout_s=2)
    try:
        channel = await dm(store, "alice", "bob")
        enqueuer = Enqueuer(store, down)
        for _ in range(3):
            assert [n.recipient for n in await enqueuer.process([message(channel, "alice", "hi")])] == ["bob"]
    finally:
        await down.close()
        await down.store.close()
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "presence failing" in r.getMessage()]
    assert len(warnings) == 1


async def test_offer_never_waits_and_drops_past_the_bound(store: SqliteMessageStore, presence: PresenceTracker) -> None:
    channel = await dm(store, "alice", "bob")
    enqueuer = Enqueuer(store, presence, queue_max=2)  # not started: nothing drains the queue
    for _ in range(3):
        enqueuer.offer(message(channel, "alice", "hi"))
    assert enqueuer.dropped == 1


async def test_the_worker_enqueues_in_the_background_and_close_drains(store: SqliteMessageStore, presence: PresenceTracker) -> None:
    channel = await dm(store, "alice", "bob")
    put = asyncio.Event()
    enqueuer = Enqueuer(store, presence, on_enqueued=put.set)
    await enqueuer.start()
    first = message(channel, "alice", "one")
    enqueuer.offer(first)
    await asyncio.wait_for(put.wait(), 5)
    # Queued just before a clean stop: close() puts them in the outbox before it returns.
    rest = [message(channel, "alice", f"m{i}") for i in range(50)]
    for m in rest:
        enqueuer.offer(m)
    await enqueuer.close()
    enqueuer.offer(message(channel, "alice", "after close"))
    assert (enqueuer.enqueued, enqueuer.dropped) == (51, 1)
    assert sorted(body["message"]["id"] for _, body in await outbox(store)) == sorted(str(m.id) for m in [first, *rest])


def test_nothing_is_built_without_a_webhook_url(tmp_path: Path) -> None:
    settings = from_env({"CHAT_JWT_SECRET": "x" * 32, "CHAT_DATA_DIR": str(tmp_path)})
    assert not settings.push_enabled
    assert build_notifier(settings, store=SqliteMessageStore(tmp_path / "x"), presence=None) is None  # type: ignore[arg-type]
