"""The SQLite file: its schema and the connections the store opens on it.

Blocking throughout: called from the store's threads, never on the event loop.

* The **writer** connection runs in WAL mode with ``synchronous=FULL`` (each commit fsyncs the
  WAL, so an acked message survives power loss).
* **Readers** are read-only connections; WAL readers never block the writer.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from chat.errors import Unavailable

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS channels (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,
    name        TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_ts  INTEGER NOT NULL,
    dm_key      TEXT UNIQUE
);
CREATE TABLE IF NOT EXISTS members (
    channel_id  INTEGER NOT NULL,
    user_id     TEXT NOT NULL,
    joined_ts   INTEGER NOT NULL,
    PRIMARY KEY (channel_id, user_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS members_by_user ON members (user_id, channel_id);
CREATE TABLE IF NOT EXISTS messages (
    id             INTEGER PRIMARY KEY,
    channel_id     INTEGER NOT NULL,
    sender         TEXT NOT NULL,
    text           TEXT NOT NULL,
    client_msg_id  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_channel ON messages (channel_id, id);
CREATE UNIQUE INDEX IF NOT EXISTS messages_idempotency ON messages (channel_id, sender, client_msg_id);
CREATE TABLE IF NOT EXISTS read_state (
    user_id     TEXT NOT NULL,
    channel_id  INTEGER NOT NULL,
    message_id  INTEGER NOT NULL,
    PRIMARY KEY (user_id, channel_id)
) WITHOUT ROWID;
"""

BUSY_TIMEOUT_MS = 5000  # how long a connection waits for another's lock before SQLITE_BUSY

def storage_error(exc: sqlite3.Error) -> Unavailable:
    """The port's error for an SQLite failure."""
    return Unavailable(f"storage error: {exc}", retry_after_ms=1000)


def connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    """A connection for the store's threads (``check_same_thread=False``: each is used by one
    thread at a time, not always the one that opened it); autocommit, transactions explicit."""
    if readonly:
        conn = sqlite3.connect(_uri(path, mode="ro"), uri=True, check_same_thread=False, isolation_level=None)
    else:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        if not readonly:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys=OFF")
    except BaseException:
        conn.close()
        raise
    return conn


def open_writer(path: Path) -> sqlite3.Connection:
    """The writer connection, with the schema created and its version recorded."""
    conn = connect(path, readonly=False)
    try:
        conn.executescript(SCHEMA)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except BaseException:
        conn.close()
        raise
    return conn


def _uri(path: Path, **params: object) -> str:
    # as_uri() percent-encodes, so a path holding '?' or '#' stays a path.
    return path.resolve().as_uri() + "?" + "&".join(f"{k}={v}" for k, v in params.items())
