"""The notification outbox in Cassandra (contract: :mod:`chat.store.outbox`; table and layout:
``migrations/0002_notify_outbox.cql``).

Rows live at ``(shard, due_ms, notification_id)``. A claim reads every shard's due slice
(``SHARDS`` small reads in parallel), keeps the ``limit`` earliest, and moves each with one
single-partition batch (delete the old row, write the new one). Write timestamps come from
the item, not a clock: ``created_ms * 1000 + revision`` with

    put                      revision 0
    claim to attempts k      revision 2k      (delete old row + write new row)
    reschedule at attempts k revision 2k + 1  (delete the claimed row + write the new one)
    delete at attempts k     revision 2k + 1

so each step shadows every earlier one (a tombstone wins a tie), and a repeated put can never
bring back a row that a claim moved or a delivery deleted. The claim is not a lock: two
claimers racing could both move (and deliver) one item; the caller holds the cluster's
"notifier" election so there is one. Requests go through
:class:`~chat.store.cassandra_client.CassandraClient` (driver errors → ``Unavailable``).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Sequence
from dataclasses import replace

from chat.store.cassandra_client import CassandraClient
from chat.store.outbox import Notification, OutboxItem

SHARDS = 8  # partitions of the outbox: part of the data layout (see the migration)

_COLUMNS = "shard, due_ms, notification_id, recipient, body, created_ms, attempts"

# name: (statement, is_idempotent); every write states its own timestamp, so all are idempotent.
STATEMENTS: dict[str, tuple[str, bool]] = {
    "outbox_write": (f"INSERT INTO {{ks}}.notify_outbox ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?", True),
    "outbox_due": (
        "SELECT due_ms, notification_id, recipient, body, created_ms, attempts FROM {ks}.notify_outbox WHERE shard = ? AND due_ms >= ? AND due_ms <= ? LIMIT ?",
        True,
    ),
    "outbox_remove": ("DELETE FROM {ks}.notify_outbox USING TIMESTAMP ? WHERE shard = ? AND due_ms = ? AND notification_id = ?", True),
}


def statements(keyspace: str) -> dict[str, tuple[str, bool]]:
    """:data:`STATEMENTS` with the table qualified by ``keyspace`` (a validated name)."""
    return {name: (cql.format(ks=keyspace), idempotent) for name, (cql, idempotent) in STATEMENTS.items()}


def shard_of(notification_id: str) -> int:
    """The item's partition: stable for an ID, spread evenly."""
    return zlib.crc32(notification_id.encode()) % SHARDS


def write_timestamp(created_ms: int, revision: int) -> int:
    """The write time (µs) of an item's step ``revision`` (see the module docstring)."""
    return created_ms * 1000 + revision


class CassandraOutbox:
    """The outbox methods of the Cassandra store, on its client."""

    def __init__(self, client: CassandraClient) -> None:
        self._client = client

    async def put(self, notifications: Sequence[Notification]) -> None:
        # One partition per shard: plain parallel writes (each is idempotent: same row, same timestamp).
        await asyncio.gather(
            *(
                self._client.execute(
                    "outbox_write",
                    (shard_of(n.id), n.created_ms, n.id, n.recipient, n.body, n.created_ms, 0, write_timestamp(n.created_ms, 0)),
                    what="outbox put",
                )
                for n in notifications
            )
        )

    async def claim(self, now_ms: int, *, limit: int, lease_ms: int, oldest_ms: int) -> list[OutboxItem]:
        if lease_ms <= 0:
            raise ValueError("lease_ms must be positive: a claimed item has to move")
        if limit <= 0 or now_ms < oldest_ms:
            return []
        pages = await asyncio.gather(*(self._client.execute("outbox_due", (shard, oldest_ms, now_ms, limit), what="outbox claim") for shard in range(SHARDS)))
        rows = sorted((row for page in pages for row in page), key=lambda r: (r["due_ms"], r["notification_id"]))[:limit]
        lease_until = now_ms + lease_ms
        items = [OutboxItem(r["notification_id"], r["recipient"], bytes(r["body"]), r["created_ms"], lease_until, r["attempts"] + 1) for r in rows]
        # A move that fails raises: the ones that worked come back after their lease.
        await asyncio.gather(*(self._move(row["due_ms"], item, 2 * item.attempts) for row, item in zip(rows, items, strict=True)))
        return items

    async def reschedule(self, item: OutboxItem, due_ms: int) -> None:
        if due_ms != item.due_ms:  # same row: nothing to move (and a delete would win the tie)
            await self._move(item.due_ms, replace(item, due_ms=due_ms), 2 * item.attempts + 1)

    async def delete(self, item: OutboxItem) -> None:
        ts = write_timestamp(item.created_ms, 2 * item.attempts + 1)
        await self._client.execute("outbox_remove", (ts, shard_of(item.id), item.due_ms, item.id), what="outbox delete")

    async def _move(self, from_due_ms: int, item: OutboxItem, revision: int) -> None:
        """Delete the row at ``from_due_ms`` and write ``item``: one partition, one atomic batch."""
        shard, ts = shard_of(item.id), write_timestamp(item.created_ms, revision)
        await self._client.batch(
            "unlogged",
            [
                ("outbox_remove", (ts, shard, from_due_ms, item.id)),
                ("outbox_write", (shard, item.due_ms, item.id, item.recipient, item.body, item.created_ms, item.attempts, ts)),
            ],
            "outbox move",
        )
