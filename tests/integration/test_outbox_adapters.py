"""What each outbox adapter does beyond the shared contract (tests/contract/test_outbox.py):
Cassandra's write timestamps keep a repeated put from bringing back a delivered or moved item,
and a SQLite file written by the previous schema version gains the outbox table on open."""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from chat.store import cassandra_outbox
from chat.store.outbox import Notification
from chat.store.sqlite import SqliteMessageStore
from chat.store.sqlite_file import SCHEMA_VERSION

DAY_MS = 86_400_000


def note(t0: int, n: int) -> Notification:
    return Notification(f"it{t0}{n}:bob", "bob", b"{}", t0 + n)


@pytest.mark.cassandra
async def test_a_repeated_put_never_resurrects_a_delivered_or_moved_item(cassandra_store: Any, cql: Any) -> None:
    t0 = int(time.time() * 1000) - random.randrange(2 * DAY_MS, 400 * DAY_MS)
    await cassandra_store.outbox_put([note(t0, 1), note(t0, 2)])
    delivered, moved = await cassandra_store.outbox_claim(t0 + 5, limit=10, lease_ms=1000, oldest_ms=t0)
    await cassandra_store.outbox_delete(delivered)
    # A late retry of the original put (e.g. after a timeout whose write had landed).
    await cassandra_store.outbox_put([note(t0, 1), note(t0, 2)])
    assert [i.id for i in await cassandra_store.outbox_claim(t0 + 5 + 1000, limit=10, lease_ms=1000, oldest_ms=t0)] == [moved.id]
    # Behind the adapter: one row left, written at created_ms * 1000 + 2 × attempts.
    shard = cassandra_outbox.shard_of(moved.id)
    rows = await cql(
        "SELECT notification_id, attempts, WRITETIME(recipient) AS wt FROM notify_outbox WHERE shard = %s AND due_ms >= %s AND due_ms <= %s",
        (shard, t0, t0 + 10 * 1000),
    )
    assert [(r.notification_id, r.attempts, r.wt) for r in rows if r.notification_id == moved.id] == [(moved.id, 2, moved.created_ms * 1000 + 4)]
    assert all(r.notification_id != delivered.id for r in rows)


async def test_a_version_1_sqlite_file_gains_the_outbox(tmp_path: Path) -> None:
    path = tmp_path / "chat.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE channels (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, created_by TEXT NOT NULL, "
        "created_ts INTEGER NOT NULL, dm_key TEXT UNIQUE); INSERT INTO channels VALUES (7, 'group', 'old', 'alice', 1, NULL); "
        "PRAGMA user_version=1;"
    )
    conn.close()
    store = SqliteMessageStore(path)
    await store.open()
    try:
        assert (await store.get_channel(7)) is not None  # old data kept
        await store.outbox_put([note(1000, 1)])
        assert [i.id for i in await store.outbox_claim(2000, limit=5, lease_ms=10, oldest_ms=0)] == [note(1000, 1).id]
    finally:
        await store.close()
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
