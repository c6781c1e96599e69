"""SQLite MessageStore: the embedded default, one file in the data dir.

Writes go through one writer thread that **group-commits**: it takes every write
waiting in its queue, runs each in its own savepoint inside one transaction, and
resolves their futures only after ``COMMIT`` (WAL, ``synchronous=FULL``: fsynced).
One fsync thus covers a burst of sends, which is what keeps send→ack latency flat
under load. Reads run on a small pool of read-only connections (WAL readers never
block the writer). Nothing here runs on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from chat.errors import Unavailable
from chat.ids import MAX_ID
from chat.models import Channel, ChannelKind, Message, Page
from chat.store.base import AddResult

log = logging.getLogger(__name__)
T = TypeVar("T")

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

_MSG_COLS = "id, channel_id, sender, text, client_msg_id"


def _row_to_message(row: tuple[Any, ...]) -> Message:
    from chat.ids import timestamp_ms

    return Message(id=row[0], channel=row[1], sender=row[2], text=row[3], ts=timestamp_ms(row[0]), client_msg_id=row[4])


def _row_to_channel(row: tuple[Any, ...]) -> Channel:
    return Channel(id=row[0], kind=ChannelKind(row[1]), name=row[2], created_by=row[3], created_ts=row[4], dm_key=row[5])


class _WriteJob:
    __slots__ = ("fn", "future", "loop")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any], future: asyncio.Future[Any], loop: asyncio.AbstractEventLoop) -> None:
        self.fn = fn
        self.future = future
        self.loop = loop


def _resolve_all(resolutions: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in resolutions:
        if future.done():  # the caller timed out and went away
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class SqliteMessageStore:
    """MessageStore on one SQLite file (see module docstring for the threading model)."""

    def __init__(self, path: Path, *, max_batch: int = 256, readers: int = 2, timeout_s: float = 5.0) -> None:
        self.path = Path(path)
        # Bounds one group commit, so a flood cannot hold the write lock for long.
        self._max_batch = max_batch
        self._timeout_s = timeout_s
        # Bounded: a writer that falls this far behind makes callers wait (backpressure), not grow memory.
        self._queue: queue.Queue[_WriteJob | None] = queue.Queue(maxsize=10_000)
        self._writer: threading.Thread | None = None
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="sqlite-read")
        self._local = threading.local()
        self._closed = False

    # Connections

    def _connect(self, *, readonly: bool) -> sqlite3.Connection:
        if readonly:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None)
        else:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: each commit fsyncs the WAL, so an acked message survives power loss.
            conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA foreign_keys=OFF")
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(readonly=True)
            self._local.conn = conn
        return conn

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = await asyncio.get_running_loop().run_in_executor(None, self._open_writer)
        self._writer = threading.Thread(target=self._write_loop, args=(conn,), name="sqlite-writer", daemon=True)
        self._writer.start()

    def _open_writer(self) -> sqlite3.Connection:
        conn = self._connect(readonly=False)
        conn.executescript(SCHEMA)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        return conn

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._stop_writer)
        self._readers.shutdown(wait=True)

    def _stop_writer(self) -> None:
        self._queue.put(None)
        assert self._writer is not None
        self._writer.join(timeout=30)

    # Threads

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        try:
            while True:
                job = self._queue.get()
                if job is None:
                    return
                batch = [job]
                stop = False
                while len(batch) < self._max_batch:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    batch.append(more)
                self._commit_batch(conn, batch)
                if stop:
                    return
        finally:
            conn.close()

    def _commit_batch(self, conn: sqlite3.Connection, batch: list[_WriteJob]) -> None:
        outcomes: list[tuple[Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                # A savepoint per job: one failing write does not undo its batch-mates.
                conn.execute("SAVEPOINT job")
                try:
                    result = job.fn(conn)
                except Exception as exc:  # noqa: BLE001 - handed to the caller
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append((None, exc if not isinstance(exc, sqlite3.Error) else _unavailable(exc)))
                else:
                    conn.execute("RELEASE job")
                    outcomes.append((result, None))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            log.exception("sqlite group commit failed")
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            error = _unavailable(exc)
            outcomes = [(None, error)] * len(batch)
        # Futures are resolved only now, after COMMIT returned: the writes are durable. One
        # wake-up per event loop per batch, not one per write: waking a loop costs a syscall.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]] = {}
        for job, (result, error) in zip(batch, outcomes):
            by_loop.setdefault(job.loop, []).append((job.future, result, error))
        for loop, resolutions in by_loop.items():
            loop.call_soon_threadsafe(_resolve_all, resolutions)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise Unavailable("store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        job = _WriteJob(fn, future, loop)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise Unavailable("store write queue is full", retry_after_ms=200) from None
        try:
            return await asyncio.wait_for(future, self._timeout_s)
        except TimeoutError:
            raise Unavailable("store write timed out", retry_after_ms=1000) from None

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise Unavailable("store is closed")

        def run() -> T:
            try:
                return fn(self._reader())
            except sqlite3.Error as exc:
                raise _unavailable(exc) from exc

        try:
            return await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(self._readers, run), self._timeout_s)
        except TimeoutError:
            raise Unavailable("store read timed out", retry_after_ms=1000) from None

    async def ping(self) -> None:
        await self._read(lambda c: c.execute("SELECT 1").fetchone())

    # Channels and members

    async def create_channel(self, channel: Channel, members: list[str]) -> None:
        def run(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO channels (id, kind, name, created_by, created_ts, dm_key) VALUES (?, ?, ?, ?, ?, ?)",
                (channel.id, channel.kind.value, channel.name, channel.created_by, channel.created_ts, channel.dm_key),
            )
            now = _now_ms()
            c.executemany(
                "INSERT OR IGNORE INTO members (channel_id, user_id, joined_ts) VALUES (?, ?, ?)",
                [(channel.id, m, now) for m in members],
            )

        await self._write(run)

    async def get_or_create_dm(self, channel: Channel, members: tuple[str, str]) -> tuple[Channel, bool]:
        def run(c: sqlite3.Connection) -> tuple[Channel, bool]:
            row = c.execute("SELECT id, kind, name, created_by, created_ts, dm_key FROM channels WHERE dm_key = ?", (channel.dm_key,)).fetchone()
            if row is not None:
                return _row_to_channel(row), False
            c.execute(
                "INSERT INTO channels (id, kind, name, created_by, created_ts, dm_key) VALUES (?, ?, ?, ?, ?, ?)",
                (channel.id, channel.kind.value, channel.name, channel.created_by, channel.created_ts, channel.dm_key),
            )
            now = _now_ms()
            c.executemany("INSERT OR IGNORE INTO members (channel_id, user_id, joined_ts) VALUES (?, ?, ?)", [(channel.id, m, now) for m in members])
            return channel, True

        return await self._write(run)

    async def get_channel(self, channel_id: int) -> Channel | None:
        row = await self._read(
            lambda c: c.execute("SELECT id, kind, name, created_by, created_ts, dm_key FROM channels WHERE id = ?", (channel_id,)).fetchone()
        )
        return _row_to_channel(row) if row else None

    async def add_member(self, channel_id: int, user: str, *, max_members: int | None = None) -> AddResult:
        def run(c: sqlite3.Connection) -> AddResult:
            if c.execute("SELECT 1 FROM channels WHERE id = ?", (channel_id,)).fetchone() is None:
                return AddResult.NO_CHANNEL
            if c.execute("SELECT 1 FROM members WHERE channel_id = ? AND user_id = ?", (channel_id, user)).fetchone():
                return AddResult.ALREADY
            if max_members is not None:
                (count,) = c.execute("SELECT COUNT(*) FROM members WHERE channel_id = ?", (channel_id,)).fetchone()
                if count >= max_members:
                    return AddResult.FULL
            c.execute("INSERT INTO members (channel_id, user_id, joined_ts) VALUES (?, ?, ?)", (channel_id, user, _now_ms()))
            return AddResult.ADDED

        return await self._write(run)

    async def remove_member(self, channel_id: int, user: str) -> bool:
        def run(c: sqlite3.Connection) -> bool:
            return c.execute("DELETE FROM members WHERE channel_id = ? AND user_id = ?", (channel_id, user)).rowcount > 0

        return await self._write(run)

    async def is_member(self, channel_id: int, user: str) -> bool:
        row = await self._read(lambda c: c.execute("SELECT 1 FROM members WHERE channel_id = ? AND user_id = ?", (channel_id, user)).fetchone())
        return row is not None

    async def list_members(self, channel_id: int, *, limit: int = 1000) -> list[str]:
        rows = await self._read(
            lambda c: c.execute("SELECT user_id FROM members WHERE channel_id = ? ORDER BY user_id LIMIT ?", (channel_id, limit)).fetchall()
        )
        return [r[0] for r in rows]

    async def count_members(self, channel_id: int) -> int:
        row = await self._read(lambda c: c.execute("SELECT COUNT(*) FROM members WHERE channel_id = ?", (channel_id,)).fetchone())
        return int(row[0])

    async def list_user_channels(self, user: str, *, before: int | None = None, limit: int = 1000) -> list[Channel]:
        at_most = MAX_ID if before is None else before - 1  # IDs are signed 64-bit: MAX_ID + 1 does not bind
        rows = await self._read(
            lambda c: c.execute(
                "SELECT ch.id, ch.kind, ch.name, ch.created_by, ch.created_ts, ch.dm_key FROM members m "
                "JOIN channels ch ON ch.id = m.channel_id WHERE m.user_id = ? AND m.channel_id <= ? ORDER BY m.channel_id DESC LIMIT ?",
                (user, at_most, limit),
            ).fetchall()
        )
        return [_row_to_channel(r) for r in rows]

    # Messages

    async def insert_message(self, message: Message) -> tuple[Message, bool]:
        def run(c: sqlite3.Connection) -> tuple[Message, bool]:
            row = c.execute(
                f"SELECT {_MSG_COLS} FROM messages WHERE channel_id = ? AND sender = ? AND client_msg_id = ?",
                (message.channel, message.sender, message.client_msg_id),
            ).fetchone()
            if row is not None:
                return _row_to_message(row), False
            c.execute(
                f"INSERT INTO messages ({_MSG_COLS}) VALUES (?, ?, ?, ?, ?)",
                (message.id, message.channel, message.sender, message.text, message.client_msg_id),
            )
            return message, True

        return await self._write(run)

    async def history(self, channel_id: int, *, before: int | None = None, after: int | None = None, limit: int = 50) -> Page:
        def run(c: sqlite3.Connection) -> Page:
            if after is not None:
                if before is not None:
                    rows = c.execute(
                        f"SELECT {_MSG_COLS} FROM messages WHERE channel_id = ? AND id > ? AND id < ? ORDER BY id ASC LIMIT ?",
                        (channel_id, after, before, limit + 1),
                    ).fetchall()
                else:
                    rows = c.execute(
                        f"SELECT {_MSG_COLS} FROM messages WHERE channel_id = ? AND id > ? ORDER BY id ASC LIMIT ?",
                        (channel_id, after, limit + 1),
                    ).fetchall()
                has_more = len(rows) > limit
                return Page([_row_to_message(r) for r in rows[:limit]], has_more)
            if before is not None:
                rows = c.execute(
                    f"SELECT {_MSG_COLS} FROM messages WHERE channel_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
                    (channel_id, before, limit + 1),
                ).fetchall()
            else:
                rows = c.execute(
                    f"SELECT {_MSG_COLS} FROM messages WHERE channel_id = ? ORDER BY id DESC LIMIT ?",
                    (channel_id, limit + 1),
                ).fetchall()
            has_more = len(rows) > limit
            return Page([_row_to_message(r) for r in reversed(rows[:limit])], has_more)

        return await self._read(run)

    # Read positions

    async def set_read(self, user: str, channel_id: int, message_id: int) -> int:
        def run(c: sqlite3.Connection) -> int:
            c.execute(
                "INSERT INTO read_state (user_id, channel_id, message_id) VALUES (?, ?, ?) "
                "ON CONFLICT (user_id, channel_id) DO UPDATE SET message_id = MAX(message_id, excluded.message_id)",
                (user, channel_id, message_id),
            )
            (pos,) = c.execute("SELECT message_id FROM read_state WHERE user_id = ? AND channel_id = ?", (user, channel_id)).fetchone()
            return int(pos)

        return await self._write(run)

    async def get_read(self, user: str, channel_id: int) -> int | None:
        row = await self._read(lambda c: c.execute("SELECT message_id FROM read_state WHERE user_id = ? AND channel_id = ?", (user, channel_id)).fetchone())
        return int(row[0]) if row else None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _unavailable(exc: sqlite3.Error) -> Unavailable:
    return Unavailable(f"storage error: {exc}", retry_after_ms=1000)
