"""The MessageStore contract (chat/store/base.py), run against every adapter."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from chat.ids import EPOCH_MS, SnowflakeGenerator, timestamp_ms
from chat.models import Channel, ChannelKind, Message
from chat.store.base import AddResult

DAY_MS = 86_400_000


def make_channel(ids: SnowflakeGenerator, kind: ChannelKind = ChannelKind.GROUP, creator: str = "alice", dm_key: str | None = None) -> Channel:
    cid = ids.next_id_blocking()
    return Channel(cid, kind, f"{kind.value}-{cid}", creator, timestamp_ms(cid), dm_key=dm_key)


def make_message(ids: SnowflakeGenerator, channel: int, sender: str = "alice", text: str = "hi", key: str | None = None) -> Message:
    mid = ids.next_id_blocking()
    return Message(mid, channel, sender, text, timestamp_ms(mid), key or f"k{mid}")


async def fill(store: Any, ids: SnowflakeGenerator, channel: int, n: int) -> list[Message]:
    out = []
    for i in range(n):
        m, created = await store.insert_message(make_message(ids, channel, text=f"m{i}"))
        assert created
        out.append(m)
    return out


async def test_channel_roundtrip_and_members(store: Any, ids: SnowflakeGenerator) -> None:
    ch = make_channel(ids)
    await store.create_channel(ch, ["alice", "bob"])
    assert await store.get_channel(ch.id) == ch
    assert await store.get_channel(ids.next_id_blocking()) is None
    assert await store.list_members(ch.id) == ["alice", "bob"]
    assert await store.count_members(ch.id) == 2
    assert await store.is_member(ch.id, "bob")
    assert not await store.is_member(ch.id, "carol")
    assert ch.id in [c.id for c in await store.list_user_channels("bob")]
    assert ch.id not in [c.id for c in await store.list_user_channels("carol")]


async def test_get_dm_finds_a_pair_and_never_creates(store: Any, ids: SnowflakeGenerator) -> None:
    key = f"dm-a-{ids.next_id_blocking()}\ndm-b"
    assert await store.get_dm(key) is None
    assert await store.get_dm(key) is None  # asking twice created nothing
    dm, created = await store.get_or_create_dm(make_channel(ids, ChannelKind.DM, dm_key=key), ("dm-a", "dm-b"))
    assert created and await store.get_dm(key) == dm


async def test_user_channels_page_newest_first(store: Any, ids: SnowflakeGenerator) -> None:
    """Issue 12 item 8: a user's channel list pages by ID, so no number of channels buries one."""
    user = f"pager-{ids.next_id_blocking()}"  # the real backend is shared: a user of this test's own
    made = []
    for _ in range(7):
        ch = make_channel(ids)
        await store.create_channel(ch, ["alice", user])
        made.append(ch.id)
    newest_first = made[::-1]
    assert [c.id for c in await store.list_user_channels(user)] == newest_first
    pages, before = [], None
    while True:
        page = [c.id for c in await store.list_user_channels(user, before=before, limit=3)]
        if not page:
            break
        pages.append(page)
        before = page[-1]
    assert pages == [newest_first[0:3], newest_first[3:6], newest_first[6:]]
    assert [c.id for c in await store.list_user_channels(user, before=made[0])] == []
    assert await store.list_user_channels(user, before=0) == []


async def test_add_and_remove_member(store: Any, ids: SnowflakeGenerator) -> None:
    ch = make_channel(ids)
    await store.create_channel(ch, ["alice"])
    assert await store.add_member(ch.id, "bob", max_members=3) is AddResult.ADDED
    assert await store.add_member(ch.id, "bob", max_members=3) is AddResult.ALREADY
    assert await store.add_member(ch.id, "carol", max_members=3) is AddResult.ADDED
    assert await store.add_member(ch.id, "dave", max_members=3) is AddResult.FULL
    assert not await store.is_member(ch.id, "dave")
    assert await store.add_member(ids.next_id_blocking(), "bob") is AddResult.NO_CHANNEL
    assert await store.remove_member(ch.id, "bob")
    assert not await store.remove_member(ch.id, "bob")
    assert not await store.is_member(ch.id, "bob")
    assert ch.id not in [c.id for c in await store.list_user_channels("bob")]
    assert await store.count_members(ch.id) == 2


async def test_concurrent_adds_never_exceed_the_limit(store: Any, ids: SnowflakeGenerator) -> None:
    ch = make_channel(ids)
    await store.create_channel(ch, ["alice"])
    results = await asyncio.gather(*(store.add_member(ch.id, f"u{i}", max_members=5) for i in range(12)))
    assert results.count(AddResult.ADDED) == 4
    assert results.count(AddResult.FULL) == 8
    assert await store.count_members(ch.id) == 5


async def test_dm_is_one_channel_per_pair_even_when_racing(store: Any, ids: SnowflakeGenerator) -> None:
    key = f"a{ids.next_id_blocking()}\nb"
    proposals = [make_channel(ids, ChannelKind.DM, dm_key=key) for _ in range(8)]
    results = await asyncio.gather(*(store.get_or_create_dm(p, ("a", "b")) for p in proposals))
    assert len({ch.id for ch, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    winner = results[0][0]
    again, created = await store.get_or_create_dm(make_channel(ids, ChannelKind.DM, dm_key=key), ("a", "b"))
    assert (again, created) == (winner, False)
    assert await store.list_members(winner.id) == ["a", "b"]


async def test_insert_is_idempotent_on_channel_sender_key(store: Any, ids: SnowflakeGenerator) -> None:
    ch = make_channel(ids)
    await store.create_channel(ch, ["alice", "bob"])
    first = make_message(ids, ch.id, key="same")
    stored, created = await store.insert_message(first)
    assert created and stored == first
    retry = make_message(ids, ch.id, text="different text", key="same")
    stored, created = await store.insert_message(retry)
    assert not created and stored == first
    # The key is per sender and per channel.
    other_sender, created = await store.insert_message(make_message(ids, ch.id, sender="bob", key="same"))
    assert created and other_sender.sender == "bob"
    page = await store.history(ch.id, limit=10)
    assert [m.id for m in page.messages] == [first.id, other_sender.id]


async def test_concurrent_retries_store_one_message(store: Any, ids: SnowflakeGenerator) -> None:
    ch = make_channel(ids)
    await store.create_channel(ch, ["alice"])
    attempts = [make_message(ids, ch.id, text=f"try {i}", key="race") for i in range(6)]
    results = await asyncio.gather(*(store.insert_message(m) for m in attempts))
    assert sum(created for _, created in results) == 1
    assert len({stored.id for stored, _ in results}) == 1
    page = await store.history(ch.id, limit=10)
    assert len(page.messages) == 1


async def test_a_batch_stores_each_message_once_against_singles_other_batches_and_itself(store: Any, ids: SnowflakeGenerator) -> None:
    """insert_messages: the idempotency of insert_message for every message of a batch."""
    ch = make_channel(ids)
    await store.create_channel(ch, ["alice", "bob"])
    single, _ = await store.insert_message(make_message(ids, ch.id, key="was-single"))
    batch = [
        make_message(ids, ch.id, text="new 1", key="n1"),
        make_message(ids, ch.id, text="a retry of a single send", key="was-single"),
        make_message(ids, ch.id, sender="bob", text="new 2", key="n1"),  # same key, other sender: its own message
        make_message(ids, ch.id, text="the client retried while its first try was queued", key="n1"),
    ]
    results = await store.insert_messages(batch)
    assert [created for _, created in results] == [True, False, True, False]
    assert results[0][0] == batch[0] and results[2][0] == batch[2]
    assert results[1][0] == single and results[3][0] == batch[0]  # the originals, text and ID included
    # A whole batch retried (new IDs, same keys), concurrently with single retries of its keys.
    again = [make_message(ids, ch.id, text=f"again {m.client_msg_id}", sender=m.sender, key=m.client_msg_id) for m in batch]
    retried, *singles = await asyncio.gather(store.insert_messages(again), *(store.insert_message(m) for m in again))
    assert not any(created for _, created in [*retried, *singles])
    assert [m.id for m, _ in retried] == [batch[0].id, single.id, batch[2].id, batch[0].id]
    page = await store.history(ch.id, limit=10)
    assert [m.id for m in page.messages] == sorted([single.id, batch[0].id, batch[2].id])
    assert await store.insert_messages([]) == []
    with pytest.raises(ValueError):
        await store.insert_messages([make_message(ids, ch.id), make_message(ids, ch.id + 1)])


async def test_racing_batches_store_one_message_per_key_and_page_in_id_order(store: Any, ids: SnowflakeGenerator) -> None:
    ch = make_channel(ids)
    await store.create_channel(ch, ["alice"])
    tries = [[make_message(ids, ch.id, text=f"try {t} of {k}", key=f"k{k}") for k in range(20)] for t in range(3)]
    results = await asyncio.gather(*(store.insert_messages(batch) for batch in tries))
    for k in range(20):
        outcomes = [results[t][k] for t in range(3)]
        assert sum(created for _, created in outcomes) == 1
        assert len({m.id for m, _ in outcomes}) == 1
    page = await store.history(ch.id, limit=50)
    assert len(page.messages) == 20 and [m.id for m in page.messages] == sorted(m.id for m in page.messages)
    assert {m.client_msg_id for m in page.messages} == {f"k{k}" for k in range(20)}


async def test_history_paging_rules(store: Any, ids: SnowflakeGenerator) -> None:
    ch = make_channel(ids)
    await store.create_channel(ch, ["alice"])
    msgs = await fill(store, ids, ch.id, 12)
    all_ids = [m.id for m in msgs]

    newest = await store.history(ch.id, limit=5)
    assert [m.id for m in newest.messages] == all_ids[-5:] and newest.has_more
    everything = await store.history(ch.id, limit=12)
    assert [m.id for m in everything.messages] == all_ids and not everything.has_more

    before = await store.history(ch.id, before=all_ids[6], limit=4)
    assert [m.id for m in before.messages] == all_ids[2:6] and before.has_more
    before_end = await store.history(ch.id, before=all_ids[2], limit=4)
    assert [m.id for m in before_end.messages] == all_ids[:2] and not before_end.has_more

    after = await store.history(ch.id, after=all_ids[3], limit=4)
    assert [m.id for m in after.messages] == all_ids[4:8] and after.has_more
    after_end = await store.history(ch.id, after=all_ids[7], limit=4)
    assert [m.id for m in after_end.messages] == all_ids[8:] and not after_end.has_more

    between = await store.history(ch.id, after=all_ids[1], before=all_ids[9], limit=3)
    assert [m.id for m in between.messages] == all_ids[2:5] and between.has_more
    between_all = await store.history(ch.id, after=all_ids[1], before=all_ids[9], limit=7)
    assert [m.id for m in between_all.messages] == all_ids[2:9] and not between_all.has_more

    empty = await store.history(ch.id, after=all_ids[-1], limit=5)
    assert empty.messages == [] and not empty.has_more
    assert (await store.history(ids.next_id_blocking(), limit=5)).messages == []


async def test_history_spans_long_time_ranges(store: Any) -> None:
    """Messages weeks apart (different storage buckets in Cassandra) page seamlessly."""
    clock = [EPOCH_MS + 400 * DAY_MS]
    gen = SnowflakeGenerator(7, clock=lambda: clock[0])
    base = SnowflakeGenerator(__import__("random").randrange(1024))
    ch = make_channel(base)
    await store.create_channel(ch, ["alice"])
    expected = []
    for day in (0, 1, 9, 10, 11, 40, 41, 90):
        clock[0] = EPOCH_MS + (400 + day) * DAY_MS + 1000
        for _ in range(2):
            m, _ = await store.insert_message(make_message(gen, ch.id))
            expected.append(m.id)
    walked: list[int] = []
    before = None
    while True:
        page = await store.history(ch.id, before=before, limit=3)
        walked = [m.id for m in page.messages] + walked
        if not page.has_more:
            break
        before = page.messages[0].id
    assert walked == expected
    forward: list[int] = []
    after = 0
    while True:
        page = await store.history(ch.id, after=after, limit=5)
        forward += [m.id for m in page.messages]
        if not page.has_more:
            break
        after = page.messages[-1].id
    assert forward == expected
    newest = await store.history(ch.id, limit=3)
    assert [m.id for m in newest.messages] == expected[-3:] and newest.has_more


async def test_large_message_round_trips(store: Any, ids: SnowflakeGenerator) -> None:
    ch = make_channel(ids)
    await store.create_channel(ch, ["alice"])
    text = "é🙂\"\\\n" * 20_000  # 100,000 code points, multi-byte and escape-heavy
    m, _ = await store.insert_message(make_message(ids, ch.id, text=text))
    page = await store.history(ch.id, limit=1)
    assert page.messages[0].text == text and page.messages[0] == m


async def test_read_position_never_moves_back(store: Any, ids: SnowflakeGenerator) -> None:
    ch = make_channel(ids)
    await store.create_channel(ch, ["alice"])
    assert await store.get_read("alice", ch.id) is None
    assert await store.set_read("alice", ch.id, 500) == 500
    assert await store.set_read("alice", ch.id, 300) == 500
    assert await store.set_read("alice", ch.id, 900) == 900
    assert await store.get_read("alice", ch.id) == 900
    assert await store.get_read("bob", ch.id) is None


async def test_data_survives_reopen(store_factory: Any, ids: SnowflakeGenerator) -> None:
    first = store_factory()
    await first.open()
    ch = make_channel(ids)
    await first.create_channel(ch, ["alice"])
    msgs = await fill(first, ids, ch.id, 3)
    await first.close()
    second = store_factory()
    await second.open()
    try:
        assert await second.get_channel(ch.id) == ch
        assert (await second.history(ch.id, limit=10)).messages == msgs
    finally:
        await second.close()


async def test_ping_answers(store: Any) -> None:
    await store.ping()
