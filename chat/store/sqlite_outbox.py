"""The notification outbox in the SQLite file (contract: :mod:`chat.store.outbox`).

Blocking functions on a connection, run by the store's writer thread inside its group commit
(so a claim — select, then update — is one atomic step) or by a reader thread. The table is
keyed by the notification ID (``INSERT OR IGNORE`` makes puts idempotent) and indexed by due
time, so a claim reads only what is due.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from chat.store.outbox import Notification, OutboxItem

# Part of the file's schema from version 2 on (chat.store.sqlite_file).
OUTBOX_SCHEMA = """
CREATE TABLE IF NOT EXISTS notify_outbox (
    id          TEXT PRIMARY KEY,
    recipient   TEXT NOT NULL,
    body        BLOB NOT NULL,
    created_ms  INTEGER NOT NULL,
    due_ms      INTEGER NOT NULL,
    attempts    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS notify_outbox_due ON notify_outbox (due_ms, id);
"""


def put(c: sqlite3.Connection, notifications: Sequence[Notification]) -> None:
    c.executemany(
        "INSERT OR IGNORE INTO notify_outbox (id, recipient, body, created_ms, due_ms, attempts) VALUES (?, ?, ?, ?, ?, 0)",
        [(n.id, n.recipient, n.body, n.created_ms, n.created_ms) for n in notifications],
    )


def any_due(c: sqlite3.Connection, now_ms: int) -> bool:
    """Whether a claim at ``now_ms`` has anything to do (a read: the index alone answers)."""
    return c.execute("SELECT 1 FROM notify_outbox WHERE due_ms <= ? LIMIT 1", (now_ms,)).fetchone() is not None


def claim(c: sqlite3.Connection, now_ms: int, limit: int, lease_ms: int, oldest_ms: int) -> list[OutboxItem]:
    # Items due before oldest_ms are past the caller's age limit: never returned, so dropped here.
    c.execute("DELETE FROM notify_outbox WHERE due_ms < ?", (oldest_ms,))
    rows = c.execute(
        "SELECT id, recipient, body, created_ms, attempts FROM notify_outbox WHERE due_ms <= ? ORDER BY due_ms, id LIMIT ?",
        (now_ms, max(0, limit)),
    ).fetchall()
    due = now_ms + lease_ms
    c.executemany("UPDATE notify_outbox SET due_ms = ?, attempts = attempts + 1 WHERE id = ?", [(due, r[0]) for r in rows])
    return [OutboxItem(r[0], r[1], bytes(r[2]), r[3], due, r[4] + 1) for r in rows]


def reschedule(c: sqlite3.Connection, item: OutboxItem, due_ms: int) -> None:
    # Only the item as claimed: one claimed again since (its lease ran out) is left to that claim.
    c.execute("UPDATE notify_outbox SET due_ms = ? WHERE id = ? AND attempts = ?", (due_ms, item.id, item.attempts))


def delete(c: sqlite3.Connection, item: OutboxItem) -> None:
    c.execute("DELETE FROM notify_outbox WHERE id = ? AND attempts = ?", (item.id, item.attempts))
