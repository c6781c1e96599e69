"""The SQLite store on a full or read-only disk (issue 12, item 10): it opens, serves reads,
refuses writes with one clear ``unavailable`` and one warning line, and recovers by itself
once it can write again.

The disk is a real tmpfs filled to the last block (tests/support/disk.py), because the two
ways a full disk breaks SQLite differ: after a clean stop the WAL index (``-shm``) has to be
created and cannot grow (``SQLITE_IOERR_SHMSIZE``, before any query); after a crash it is
still there and the first write fails (``SQLITE_FULL``).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chat.errors import Unavailable
from chat.ids import SnowflakeGenerator, timestamp_ms
from chat.models import Channel, ChannelKind, Message
from chat.store.sqlite import SqliteMessageStore
from tests.support.disk import SmallDisk, small_disk

FULL = "message storage is full or read-only"
IDS = SnowflakeGenerator(5)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    with small_disk(tmp_path / "disk") as mounted:
        yield mounted


def channel() -> Channel:
    cid = IDS.next_id_blocking()
    return Channel(cid, ChannelKind.GROUP, f"g-{cid}", "alice", timestamp_ms(cid))


def message(channel_id: int, text: str = "hi") -> Message:
    mid = IDS.next_id_blocking()
    return Message(mid, channel_id, "alice", text, timestamp_ms(mid), f"k{mid}")


async def seed(path: Path, count: int = 3) -> tuple[Channel, list[Message]]:
    """A node that ran, stored a channel and ``count`` messages, and stopped cleanly."""
    store = SqliteMessageStore(path)
    await store.open()
    ch = channel()
    await store.create_channel(ch, ["alice", "bob"])
    msgs = [(await store.insert_message(message(ch.id, f"m{i}")))[0] for i in range(count)]
    await store.close()
    return ch, msgs


async def restarted_on_a_full_disk(disk: SmallDisk, *, recovery_interval_s: float) -> tuple[SqliteMessageStore, Channel, list[Message]]:
    """The store of a node that stopped cleanly, opened again after its disk filled up."""
    path = disk.root / "chat.sqlite3"
    ch, msgs = await seed(path)
    assert not path.with_name("chat.sqlite3-shm").exists()  # closing every connection removed the WAL index
    disk.fill()
    store = SqliteMessageStore(path, recovery_interval_s=recovery_interval_s)
    await store.open()
    return store, ch, msgs


# Seeds the store in another process that then dies by SIGKILL: its WAL and WAL index stay.
_CRASH = """
import asyncio, json, os, signal, sys
from chat.ids import SnowflakeGenerator, timestamp_ms
from chat.models import Channel, ChannelKind, Message
from chat.store.sqlite import SqliteMessageStore

async def main():
    store = SqliteMessageStore(sys.argv[1])
    await store.open()
    ids = SnowflakeGenerator(6)
    cid = ids.next_id_blocking()
    await store.create_channel(Channel(cid, ChannelKind.GROUP, "crashed", "alice", timestamp_ms(cid)), ["alice"])
    mids = []
    for i in range(3):
        mid = ids.next_id_blocking()
        await store.insert_message(Message(mid, cid, "alice", f"m{i}", timestamp_ms(mid), f"c{i}"))
        mids.append(mid)
    print(json.dumps({"channel": cid, "messages": mids}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


def seed_and_crash(path: Path) -> tuple[int, list[int]]:
    result = subprocess.run([sys.executable, "-c", _CRASH, str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == -9, result.stderr
    seeded = json.loads(result.stdout)
    return seeded["channel"], seeded["messages"]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def assert_refused(store: SqliteMessageStore, channel_id: int) -> None:
    with pytest.raises(Unavailable) as refused:
        await store.insert_message(message(channel_id))
    assert refused.value.message == FULL
    assert refused.value.retry_after_ms is not None and refused.value.retry_after_ms > 0


async def test_after_a_clean_stop_a_full_disk_serves_reads_refuses_writes_and_recovers(disk: SmallDisk, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="chat.store")
    # recovery_interval_s=0: every refused write first tries to leave the degraded mode again.
    store, ch, msgs = await restarted_on_a_full_disk(disk, recovery_interval_s=0)
    path = store.path
    try:
        for _ in range(3):
            assert (await store.history(ch.id)).messages == msgs
            assert await store.get_channel(ch.id) == ch
            assert await store.list_members(ch.id) == ["alice", "bob"]
            await store.ping()
            await assert_refused(store, ch.id)
            with pytest.raises(Unavailable, match=FULL):
                await store.set_read("bob", ch.id, msgs[-1].id)
        lines = warnings(caplog)
        assert len(lines) == 1 and FULL in lines[0] and str(path) in lines[0], lines

        disk.free()
        new = message(ch.id, "after")
        assert await store.insert_message(new) == (new, True)
        assert (await store.history(ch.id)).messages == [*msgs, new]
        assert await store.set_read("bob", ch.id, new.id) == new.id
        assert [r.getMessage() for r in caplog.records if "writable again" in r.getMessage()] == [f"message storage {path} is writable again"]
    finally:
        await store.close()
    again = SqliteMessageStore(path)
    await again.open()
    try:
        assert (await again.history(ch.id)).messages == [*msgs, new]
    finally:
        await again.close()


async def test_after_a_crash_a_full_disk_serves_reads_from_the_wal_refuses_writes_and_recovers(
    disk: SmallDisk, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chat.store")
    path = disk.root / "chat.sqlite3"
    channel_id, mids = seed_and_crash(path)
    assert path.with_name("chat.sqlite3-wal").stat().st_size > 0  # the messages are only in the WAL
    assert path.with_name("chat.sqlite3-shm").exists()
    disk.fill()
    store = SqliteMessageStore(path, recovery_interval_s=0)
    await store.open()
    try:
        assert [m.id for m in (await store.history(channel_id)).messages] == mids
        for _ in range(3):
            await assert_refused(store, channel_id)
        assert [m.id for m in (await store.history(channel_id)).messages] == mids
        lines = warnings(caplog)
        assert len(lines) == 1 and FULL in lines[0], lines

        disk.free()
        new = message(channel_id, "after")
        assert await store.insert_message(new) == (new, True)
        assert [m.id for m in (await store.history(channel_id)).messages] == [*mids, new.id]
        assert any("writable again" in r.getMessage() for r in caplog.records)
    finally:
        await store.close()


async def test_a_read_only_filesystem_serves_reads_refuses_writes_and_recovers(disk: SmallDisk, caplog: pytest.LogCaptureFixture) -> None:
    path = disk.root / "chat.sqlite3"
    ch, msgs = await seed(path)
    disk.read_only()
    store = SqliteMessageStore(path, recovery_interval_s=0)
    try:
        await store.open()
        assert (await store.history(ch.id)).messages == msgs
        await assert_refused(store, ch.id)
        assert len(warnings(caplog)) == 1
        disk.writable()
        new = message(ch.id)
        assert await store.insert_message(new) == (new, True)
    finally:
        disk.writable()
        await store.close()


async def test_a_new_database_on_a_full_disk_starts_and_creates_its_schema_once_it_can(disk: SmallDisk) -> None:
    path = disk.root / "chat.sqlite3"
    disk.fill()
    store = SqliteMessageStore(path, recovery_interval_s=0)
    await store.open()
    try:
        with pytest.raises(Unavailable):  # nothing to read: no schema yet
            await store.history(1)
        await assert_refused(store, 1)
        disk.free()
        ch = channel()
        await store.create_channel(ch, ["alice"])
        assert await store.get_channel(ch.id) == ch
    finally:
        await store.close()


async def test_a_refused_write_waits_for_the_recovery_interval_before_trying_again(disk: SmallDisk) -> None:
    store, ch, _ = await restarted_on_a_full_disk(disk, recovery_interval_s=3600)
    try:
        await assert_refused(store, ch.id)  # the first refused write tries to recover, and fails
        disk.free()
        await assert_refused(store, ch.id)  # the next try is an hour away: no file work per write
    finally:
        await store.close()


async def test_opening_a_current_database_writes_nothing(tmp_path: Path) -> None:
    """What lets a node start on a full disk: the schema version is read, not rewritten.
    (Every write goes to the WAL first, so an open that wrote leaves a frame there.)"""
    path = tmp_path / "chat.sqlite3"
    ch, msgs = await seed(path)
    store = SqliteMessageStore(path)
    await store.open()
    try:
        assert (await store.history(ch.id)).messages == msgs
        wal = path.with_name("chat.sqlite3-wal")
        assert not wal.exists() or wal.stat().st_size == 0
    finally:
        await store.close()
