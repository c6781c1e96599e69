"""CassandraMessageStore against real Cassandra: schema, history across buckets, crash
recovery of claims, read positions, and a Cassandra that is missing or stops answering."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from chat.errors import Unavailable
from chat.ids import EPOCH_MS, SnowflakeGenerator, timestamp_ms
from chat.models import Channel, ChannelKind, Message
from chat.store.cassandra import BUCKET_SPAN_MS, CassandraMessageStore, bucket_of
from chat.store.cassandra_schema import migrate
from chat.store.sqlite import SqliteMessageStore
from tests.integration.conftest import cassandra_settings
from tests.support import services

pytestmark = pytest.mark.cassandra

DAY_MS = 86_400_000


@pytest.fixture
def ids() -> SnowflakeGenerator:
    return SnowflakeGenerator(random.randrange(1024))


def channel(ids: SnowflakeGenerator, kind: ChannelKind = ChannelKind.GROUP, dm_key: str | None = None) -> Channel:
    cid = ids.next_id_blocking()
    return Channel(cid, kind, f"it-{cid}", "alice", timestamp_ms(cid), dm_key=dm_key)


def message(gen: SnowflakeGenerator, channel_id: int, text: str = "hi", key: str | None = None) -> Message:
    mid = gen.next_id_blocking()
    return Message(mid, channel_id, "alice", text, timestamp_ms(mid), key or f"k{mid}")


# Schema


async def test_messages_are_partitioned_by_channel_and_bucket_newest_first(cassandra_store: Any, cql: Any) -> None:
    rows = await cql(
        "SELECT table_name, column_name, kind, position, clustering_order, type FROM system_schema.columns WHERE keyspace_name = %s",
        (services.TEST_KEYSPACE,),
    )

    def key(table: str) -> tuple[list[str], list[tuple[str, str]]]:
        cols = [r for r in rows if r.table_name == table]
        partition = [r.column_name for r in sorted((r for r in cols if r.kind == "partition_key"), key=lambda r: r.position)]
        clustering = [(r.column_name, r.clustering_order) for r in sorted((r for r in cols if r.kind == "clustering"), key=lambda r: r.position)]
        return partition, clustering

    assert key("messages") == (["channel_id", "bucket"], [("message_id", "desc")])
    types = {r.column_name: r.type for r in rows if r.table_name == "messages"}
    assert types["channel_id"] == "bigint" and types["bucket"] == "int" and types["message_id"] == "bigint"
    assert key("channel_buckets") == (["channel_id"], [("bucket", "desc")])
    assert key("message_keys") == (["channel_id", "sender", "client_msg_id"], [])
    assert key("dm_pairs") == (["dm_key"], [])
    assert key("members_by_channel") == (["channel_id"], [("user_id", "asc")])
    assert key("channels_by_user") == (["user_id"], [("channel_id", "desc")])
    applied = await cql("SELECT version, name FROM schema_migrations")
    assert (1, "0001_initial.cql") in [(r.version, r.name) for r in applied]


async def test_migrate_command_applies_once_then_reports_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    keyspace = "chat_it_" + uuid.uuid4().hex[:8]
    settings = cassandra_settings(CHAT_CASSANDRA_KEYSPACE=keyspace, CHAT_CASSANDRA_MIGRATE="0")
    try:
        # Without the schema, a store refuses to open, with the port's error.
        with pytest.raises(Unavailable):
            await CassandraMessageStore.from_settings(settings).open()
        assert await migrate(settings) == 0
        assert "applied 0001_initial.cql" in capsys.readouterr().out
        assert await migrate(settings) == 0
        assert "up to date" in capsys.readouterr().out
        store = CassandraMessageStore.from_settings(settings)
        await store.open()
        await store.ping()
        await store.close()
    finally:
        session = await asyncio.to_thread(services.cql_session)
        await asyncio.to_thread(session.execute, f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)
        await asyncio.to_thread(session.cluster.shutdown)


# History


async def test_history_across_three_buckets_matches_the_embedded_store(cassandra_store: Any, tmp_path: Path, ids: SnowflakeGenerator) -> None:
    """Writes land concurrently and in random order (their latency decides nothing); every
    page over three buckets, boundaries included, equals the SQLite store's page."""
    reference = SqliteMessageStore(tmp_path / "ref.sqlite3")
    await reference.open()
    try:
        ch = channel(ids)
        for store in (cassandra_store, reference):
            await store.create_channel(ch, ["alice"])
        start = EPOCH_MS + 50 * BUCKET_SPAN_MS  # the first millisecond of bucket 50
        clock = [start]
        gen = SnowflakeGenerator(random.randrange(1024), clock=lambda: clock[0])
        msgs: list[Message] = []
        # Bucket 50: 7 messages, the last one in its final millisecond; bucket 51: 1, in its
        # first millisecond; bucket 52: 20.
        for at, count in ((start + DAY_MS, 6), (start + BUCKET_SPAN_MS - 1, 1), (start + BUCKET_SPAN_MS, 1), (start + 2 * BUCKET_SPAN_MS + 5 * DAY_MS, 20)):
            clock[0] = at
            msgs += [message(gen, ch.id, text=f"m{len(msgs)}") for _ in range(count)]
        assert sorted({bucket_of(m.id) for m in msgs}) == [50, 51, 52]
        shuffled = random.sample(msgs, len(msgs))
        results = await asyncio.gather(*(cassandra_store.insert_message(m) for m in shuffled))
        assert all(created for _, created in results)
        for m in msgs:
            await reference.insert_message(m)

        all_ids = [m.id for m in msgs]
        cursors = sorted({0, 1, all_ids[0] - 1, all_ids[-1] + 1, *all_ids, *(i + 1 for i in all_ids[::3])})
        pairs = [(a, b) for a in cursors[::3] for b in cursors[::4] if a < b]
        calls: list[dict[str, Any]] = []
        for limit in (1, 3, 10, 50):
            calls.append({"limit": limit})
            calls += [{"before": c, "limit": limit} for c in cursors]
            calls += [{"after": c, "limit": limit} for c in cursors]
            calls += [{"after": a, "before": b, "limit": limit} for a, b in pairs]
        for kwargs in calls:
            got, want = await asyncio.gather(cassandra_store.history(ch.id, **kwargs), reference.history(ch.id, **kwargs))
            assert got == want, kwargs
    finally:
        await reference.close()


async def test_history_skips_empty_time_ranges(cassandra_store: Any, ids: SnowflakeGenerator) -> None:
    """Two years between two messages: a page reads the bucket list and two buckets, not 73."""
    ch = channel(ids)
    await cassandra_store.create_channel(ch, ["alice"])
    clock = [EPOCH_MS + 600 * DAY_MS]
    gen = SnowflakeGenerator(random.randrange(1024), clock=lambda: clock[0])
    old = message(gen, ch.id)
    clock[0] += 730 * DAY_MS
    new = message(gen, ch.id)
    for m in (old, new):
        await cassandra_store.insert_message(m)
    queries: list[str] = []
    execute = cassandra_store._execute

    async def counting(name: str, params: Any, **kw: Any) -> Any:
        queries.append(name)
        return await execute(name, params, **kw)

    cassandra_store._execute = counting
    page = await cassandra_store.history(ch.id, limit=10)
    assert [m.id for m in page.messages] == [old.id, new.id] and not page.has_more
    assert len(queries) == 3, queries
    queries.clear()
    page = await cassandra_store.history(ch.id, after=0, limit=10)
    assert [m.id for m in page.messages] == [old.id, new.id] and len(queries) == 3


# Crash safety of the claims


async def test_a_retry_after_a_crash_between_claim_and_insert_stores_the_message(cassandra_store: Any, cql: Any, ids: SnowflakeGenerator) -> None:
    ch = channel(ids)
    await cassandra_store.create_channel(ch, ["alice"])
    original = message(ids, ch.id, text="the original", key="crash-1")
    # What a claimer that died right after its LWT leaves behind: the claim, and nothing else.
    await cql(
        "INSERT INTO message_keys (channel_id, sender, client_msg_id, message_id, body) VALUES (%s, %s, %s, %s, %s) IF NOT EXISTS",
        (ch.id, original.sender, original.client_msg_id, original.id, original.text),
    )
    assert (await cassandra_store.history(ch.id)).messages == []
    retry = message(ids, ch.id, text="the retry", key="crash-1")
    stored, created = await cassandra_store.insert_message(retry)
    assert stored == original and not created
    assert (await cassandra_store.history(ch.id)).messages == [original]
    # And again: still exactly one.
    assert await cassandra_store.insert_message(message(ids, ch.id, key="crash-1")) == (original, False)
    assert (await cassandra_store.history(ch.id)).messages == [original]


async def test_a_dm_whose_creator_crashed_after_claiming_is_completed(cassandra_store: Any, cql: Any, ids: SnowflakeGenerator) -> None:
    key = f"x{ids.next_id_blocking()}\ny"
    claimed = channel(ids, ChannelKind.DM, dm_key=key)
    await cql(
        "INSERT INTO dm_pairs (dm_key, channel_id, name, created_by, created_ts, members) VALUES (%s, %s, %s, %s, %s, %s) IF NOT EXISTS",
        (key, claimed.id, claimed.name, claimed.created_by, claimed.created_ts, ["x", "y"]),
    )
    assert await cassandra_store.get_channel(claimed.id) is None
    got, created = await cassandra_store.get_or_create_dm(channel(ids, ChannelKind.DM, dm_key=key), ("x", "y"))
    assert (got, created) == (claimed, False)
    assert await cassandra_store.get_channel(claimed.id) == claimed
    assert await cassandra_store.list_members(claimed.id) == ["x", "y"]
    assert claimed.id in [c.id for c in await cassandra_store.list_user_channels("y")]


async def test_read_position_is_the_maximum_whatever_the_write_order(cassandra_store: Any, ids: SnowflakeGenerator) -> None:
    ch = channel(ids)
    await cassandra_store.create_channel(ch, ["alice"])
    positions = [ids.next_id_blocking() for _ in range(40)]
    order = random.sample(positions, len(positions))
    results = await asyncio.gather(*(cassandra_store.set_read("alice", ch.id, p) for p in order))
    assert await cassandra_store.get_read("alice", ch.id) == max(positions)
    assert all(r >= p for r, p in zip(results, order, strict=True))  # each returns at least its own
    assert await cassandra_store.set_read("alice", ch.id, positions[0]) == max(positions)


# Cassandra missing or silent


async def test_a_closed_port_fails_fast_with_unavailable() -> None:
    store = CassandraMessageStore(["127.0.0.1:1"], keyspace="nowhere", timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(Unavailable):
        await store.open()
    assert time.monotonic() - started < 5
    with pytest.raises(Unavailable):
        await store.history(1)
    with pytest.raises(Unavailable):
        await store.ping()
    await store.close()


async def test_a_silent_server_fails_fast_with_unavailable() -> None:
    """Accepts TCP and never answers: the driver's connect timeout bounds open()."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        store = CassandraMessageStore([f"127.0.0.1:{port}"], keyspace="nowhere", timeout_s=0.5)
        started = time.monotonic()
        with pytest.raises(Unavailable):
            await store.open()
        assert time.monotonic() - started < 10
        await store.close()
    finally:
        for writer in held:
            writer.close()
        server.close()


async def test_cassandra_that_stops_answering_mid_stream(tcp_proxy: Any, ids: SnowflakeGenerator) -> None:
    """Through a proxy that freezes: calls raise Unavailable within the request timeout, and
    once it answers again the same insert, retried, stores exactly one message."""
    host, _, port = services.CASSANDRA_HOSTS.split(",")[0].partition(":")
    proxy = await tcp_proxy((host, int(port or 9042)))
    settings = cassandra_settings(CHAT_CASSANDRA_HOSTS=f"127.0.0.1:{proxy.port}", CHAT_CASSANDRA_TIMEOUT_S="0.5")
    store = CassandraMessageStore.from_settings(settings)
    await store.open()
    try:
        ch = channel(ids)
        await store.create_channel(ch, ["alice"])
        m = message(ids, ch.id)
        proxy.freeze()
        for call in (lambda: store.insert_message(m), lambda: store.history(ch.id), store.ping):
            started = time.monotonic()
            with pytest.raises(Unavailable):
                await call()
            assert time.monotonic() - started < 3
        proxy.thaw()
        # The driver may have marked the node down: retry (the client's job) for a bounded time.
        async with asyncio.timeout(30):
            while True:
                try:
                    stored, _ = await store.insert_message(m)
                    break
                except Unavailable:
                    await asyncio.sleep(0.2)  # waiting for the driver to reconnect: no event to await
        assert stored == m
        assert (await store.history(ch.id)).messages == [m]
    finally:
        await store.close()
