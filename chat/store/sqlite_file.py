"""The SQLite file: its schema, its migration, and the connections the store opens on it.

Blocking throughout: called from the store's threads, never on the event loop.

* The **writer** connection runs in WAL mode with ``synchronous=FULL`` (each commit fsyncs the
  WAL, so an acked message survives power loss). Opening it reads ``PRAGMA user_version`` and
  writes the schema only when the file is older than :data:`SCHEMA_VERSION`: a node whose
  schema is current opens without writing anything.
* **Readers** are read-only connections; WAL readers never block the writer.
* When the file cannot be written — its disk is full or it is read-only — :func:`open_writer`
  raises :class:`NotWritable` and the store falls back to one **fallback reader**
  (:func:`open_fallback_reader`). WAL readers need the shared-memory index (``-shm``), which
  cannot be created or grown on a full disk (``SQLITE_IOERR_SHMSIZE``) and cannot be created
  on a read-only one. The fallback avoids it: ``locking_mode=EXCLUSIVE`` keeps the index in
  heap memory and still reads what the WAL holds; on read-only media, where that cannot take
  its locks, ``immutable=1`` reads the main file alone, which is only right when no WAL
  content is left over, so it is used only then.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from chat.errors import Unavailable
from chat.store.sqlite_outbox import OUTBOX_SCHEMA

log = logging.getLogger(__name__)

# What a write refused because the file cannot be written says to clients.
FULL = "message storage is full or read-only"

SCHEMA_VERSION = 2  # 2: the notification outbox
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
# Every statement is IF NOT EXISTS: a version-1 file gets only what was added since.
SCHEMA += OUTBOX_SCHEMA

BUSY_TIMEOUT_MS = 5000  # how long a connection waits for another's lock before SQLITE_BUSY

# Primary result codes (the low byte) and extended ones that mean "this file cannot be
# written now" rather than a broken database or a bug: a full disk (ENOSPC on a write, or the
# WAL index that cannot grow) or a read-only file or filesystem.
_NOT_WRITABLE_PRIMARY = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN})
_NOT_WRITABLE_EXTENDED = frozenset({sqlite3.SQLITE_IOERR_SHMSIZE, sqlite3.SQLITE_IOERR_SHMOPEN})


class NotWritable(Exception):
    """The database file cannot be written now: its disk is full or it is read-only."""

    def __init__(self, cause: sqlite3.Error) -> None:
        super().__init__(str(cause))
        # SQLite's name for the failure (``SQLITE_FULL`` …), for the log line.
        self.reason = getattr(cause, "sqlite_errorname", None) or str(cause)


def cannot_write(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` says the file cannot be written now (full disk, read-only), as opposed
    to any other failure."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return False
    return code & 0xFF in _NOT_WRITABLE_PRIMARY or code in _NOT_WRITABLE_EXTENDED


def storage_error(exc: sqlite3.Error, full_retry_ms: int) -> Unavailable:
    """The port's error for an SQLite failure; a full or read-only file says so, with ``full_retry_ms``."""
    if cannot_write(exc):
        return Unavailable(FULL, retry_after_ms=full_retry_ms)
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
    """The writer connection, with the schema at :data:`SCHEMA_VERSION`.

    Raises :class:`NotWritable` when the file cannot be written and has to be (a new or older
    file, or a WAL index that cannot be set up); any other :class:`sqlite3.Error` as is."""
    try:
        conn = connect(path, readonly=False)
    except sqlite3.Error as exc:
        if cannot_write(exc):
            raise NotWritable(exc) from exc
        raise
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version < SCHEMA_VERSION:
            # One transaction: a crash or a full disk leaves the old version, never half a schema.
            conn.executescript(f"BEGIN IMMEDIATE;\n{SCHEMA}\nPRAGMA user_version={SCHEMA_VERSION};\nCOMMIT;")
        elif version > SCHEMA_VERSION:
            log.warning("%s has schema version %d, newer than this version knows (%d)", path, version, SCHEMA_VERSION)
    except sqlite3.Error as exc:
        conn.close()
        if cannot_write(exc):
            raise NotWritable(exc) from exc
        raise
    except BaseException:
        conn.close()
        raise
    return conn


def open_fallback_reader(path: Path) -> sqlite3.Connection | None:
    """A connection that reads the file without a WAL index on disk (see the module
    docstring), or None when no way of reading it works."""
    conn = _readable(str(path), uri=False, setup=("PRAGMA locking_mode=EXCLUSIVE",))
    if conn is not None:
        return conn
    if _wal_has_content(path):
        return None  # committed writes may sit in the WAL: reading the main file alone would hide them
    return _readable(_uri(path, mode="ro", immutable=1), uri=True, setup=())


def _readable(target: str, *, uri: bool, setup: tuple[str, ...]) -> sqlite3.Connection | None:
    """A connection to ``target`` after ``setup``, once a first read worked (the first read is
    what takes the locks and loads the WAL); None if any step failed."""
    try:
        conn = sqlite3.connect(target, uri=uri, check_same_thread=False, isolation_level=None)
    except sqlite3.Error:
        return None
    try:
        for statement in (f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}", *setup):
            conn.execute(statement)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error:
        conn.close()
        return None
    return conn


def _wal_has_content(path: Path) -> bool:
    try:
        return path.with_name(path.name + "-wal").stat().st_size > 0
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: assume it has, and do not read around it


def _uri(path: Path, **params: object) -> str:
    # as_uri() percent-encodes, so a path holding '?' or '#' stays a path.
    return path.resolve().as_uri() + "?" + "&".join(f"{k}={v}" for k, v in params.items())
