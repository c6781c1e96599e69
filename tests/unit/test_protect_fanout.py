"""chat.protect's fan-out and reads with a hand-moved clock: hot rooms' messages in batch frames,
typing dropped, history from a window with identical reads shared."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from chat.errors import Throttled
from chat.ids import SnowflakeGenerator, timestamp_ms
from chat.models import Channel, ChannelKind, Message, Page
from chat.protocol import BatchFrame
from tests.support.protect import Bus, Clock, HeldStore, Sink, TestNode, settle, sqlite

HOT, QUIET = 7001, 7002
IDS = SnowflakeGenerator(5)


def message(room: int, text: str) -> Message:
    mid = IDS.next_id_blocking()
    return Message(mid, room, "ann", text, timestamp_ms(mid), f"k-{mid}")


def seen(sink: Sink, room: int) -> list[str]:
    """Texts that reached the sink for ``room``, a batch as "[a b]"."""
    out = []
    for kind, channel, frame in sink.frames:
        if kind != "message" or channel != room:
            continue
        if isinstance(frame, BatchFrame):
            out.append("[" + " ".join(m["text"] for m in orjson.loads(frame.data)["messages"]) + "]")
        else:
            out.append(orjson.loads(frame.data)["message"]["text"])
    return out


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[TestNode, HeldStore, Clock, Sink]]:
    clock, inner = Clock(), await sqlite(tmp_path)
    for room in (HOT, QUIET):
        await inner.create_channel(Channel(room, ChannelKind.ROOM, "r", "ann", 0), ["ann"])
    store = HeldStore(inner)
    node = await TestNode("n", Bus(), clock, store).start(coalesce_window_s=0.03, hot_room_fetch_per_s=1.0, hot_room_fetch_burst=3)
    await node.protection.pin(HOT, True)
    sink = Sink()
    for room in (HOT, QUIET):
        await node.hub.join_channel(room, sink)
    yield node, store, clock, sink
    store.hold = None
    await node.close()
    await inner.close()


async def test_a_hot_rooms_messages_leave_in_one_batch_frame_a_quiet_rooms_at_once(setup: tuple[TestNode, HeldStore, Clock, Sink]) -> None:
    node, _, clock, sink = setup
    for text in ("a", "b", "c"):
        node.envelope(HOT, message(HOT, text))
    node.envelope(QUIET, message(QUIET, "q"))
    assert seen(sink, HOT) == [] and seen(sink, QUIET) == ["q"]
    clock.now += 0.03
    node.protection.fanout._due()  # the window's timer
    assert seen(sink, HOT) == ["[a b c]"]
    c = node.protection.counters
    assert c.batch_frames == 1 and c.coalesced_messages == 3


async def test_typing_is_dropped_in_a_hot_room_only(setup: tuple[TestNode, HeldStore, Clock, Sink]) -> None:
    node, _, _, sink = setup
    node.typing(HOT)
    node.typing(QUIET)
    assert [(kind, ch) for kind, ch, _ in sink.frames] == [("ephemeral", QUIET)]
    assert not node.protection.typing(HOT) and node.protection.typing(QUIET)  # not even published
    assert node.protection.counters.typing_suppressed == 2


async def test_a_room_that_cools_delivers_its_open_batch_before_its_next_message(setup: tuple[TestNode, HeldStore, Clock, Sink]) -> None:
    node, _, _, sink = setup
    node.envelope(HOT, message(HOT, "1"))
    node.envelope(HOT, message(HOT, "2"))
    await node.protection.pin(HOT, None)  # no longer hot
    node.envelope(HOT, message(HOT, "3"))
    assert seen(sink, HOT) == ["[1 2]", "3"]


async def test_hot_history_comes_from_one_fill_then_memory_and_sees_live_messages(setup: tuple[TestNode, HeldStore, Clock, Sink]) -> None:
    node, store, _, _ = setup
    stored = [(await store.inner.insert_message(message(HOT, f"m{i}")))[0] for i in range(30)]

    async def read(channel: int, before: int | None, after: int | None, limit: int) -> Page:
        return await store.history(channel, before=before, after=after, limit=limit)

    p = node.protection
    page = await p.history(HOT, None, None, 10, read)
    assert [m.text for m in page.messages] == [f"m{i}" for i in range(20, 30)] and page.has_more
    assert (await p.history(HOT, stored[5].id, None, 3, read)).messages == stored[2:5]
    assert store.calls["history"] == 1  # the fill; both pages from memory
    live = message(HOT, "live")
    node.envelope(HOT, live)
    mine = message(HOT, "mine")
    p.stored(mine)  # this node's own send, before its ack
    newest = await p.history(HOT, None, None, 2, read)
    assert [m.text for m in newest.messages] == ["live", "mine"] and store.calls["history"] == 1
    assert p.counters.window_hits == 3


async def test_identical_reads_the_window_cannot_answer_share_one_store_query_under_a_limit(setup: tuple[TestNode, HeldStore, Clock, Sink]) -> None:
    node, store, _, _ = setup
    await node.config.set({"hot_window_messages": 10})
    for i in range(30):
        await store.inner.insert_message(message(HOT, f"m{i}"))

    async def read(channel: int, before: int | None, after: int | None, limit: int) -> Page:
        return await store.history(channel, before=before, after=after, limit=limit)

    p = node.protection
    await p.history(HOT, None, None, 5, read)  # fills the window (the newest 10)
    store.hold = asyncio.Event()
    readers = [asyncio.ensure_future(p.history(HOT, None, 0, 5, read)) for _ in range(4)]  # the oldest five
    await settle()
    store.hold.set()
    pages = await asyncio.gather(*readers)
    assert all([m.text for m in page.messages] == [f"m{i}" for i in range(5)] for page in pages)
    assert store.calls["history"] == 2 and p.counters.reads_coalesced == 3
    await p.history(HOT, None, 1, 5, read)  # the fetch limit's last token (the fill took one)
    with pytest.raises(Throttled) as refused:
        await p.history(HOT, None, 2, 5, read)
    assert refused.value.retry_after_ms is not None and refused.value.retry_after_ms >= 1
    assert (await p.history(HOT, None, None, 3, read)).messages  # from memory: no token needed
