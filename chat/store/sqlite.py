"""SQLite MessageStore: the embedded default, one file in the data dir.

Writes go through one writer thread that group-commits
(:class:`~chat.store.sqlite_writer.GroupCommitWriter`): a caller's write returns once it is
fsynced. Reads run on a small pool of read-only connections (WAL readers never block the
writer). Nothing here runs on the event loop. The file, its schema and its connections are
:mod:`chat.store.sqlite_file`.

**A disk that cannot be written.** A node must come up on a full or read-only disk, to
serve reads and health. When :meth:`SqliteMessageStore.open` cannot set the file up for
writing, the store opens *degraded*: reads run on one fallback connection on one thread,
every write raises ``Unavailable("message storage is full or read-only")``, and one warning
line is logged. A write that comes at least ``recovery_interval_s`` after the last attempt
first tries to open the writer again, so the store recovers by itself once space is freed.
A disk that fills while the store runs fails the writes with the same error (one warning
per episode), and they succeed again as soon as it has room.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from chat.errors import Unavailable
from chat.ids import MAX_ID, timestamp_ms, wall_clock_ms
from chat.models import Channel, ChannelKind, Message, Page
from chat.store import sqlite_outbox
from chat.store.base import AddResult, one_channel
from chat.store.outbox import Notification, OutboxItem
from chat.store.sqlite_file import FULL, NotWritable, connect, open_fallback_reader, open_writer, storage_error
from chat.store.sqlite_writer import GroupCommitWriter

log = logging.getLogger(__name__)
T = TypeVar("T")

_MSG_COLS = "id, channel_id, sender, text, client_msg_id"
_CHANNEL_COLS = "id, kind, name, created_by, created_ts, dm_key"


def _row_to_message(row: tuple[Any, ...]) -> Message:
    return Message(id=row[0], channel=row[1], sender=row[2], text=row[3], ts=timestamp_ms(row[0]), client_msg_id=row[4])


def _row_to_channel(row: tuple[Any, ...]) -> Channel:
    return Channel(id=row[0], kind=ChannelKind(row[1]), name=row[2], created_by=row[3], created_ts=row[4], dm_key=row[5])


def _insert(c: sqlite3.Connection, message: Message) -> tuple[Message, bool]:
    """Store ``message`` unless its idempotency key is taken: ``(stored, created)``."""
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


def _insert_channel(c: sqlite3.Connection, channel: Channel, members: list[str] | tuple[str, ...]) -> None:
    c.execute(
        f"INSERT INTO channels ({_CHANNEL_COLS}) VALUES (?, ?, ?, ?, ?, ?)",
        (channel.id, channel.kind.value, channel.name, channel.created_by, channel.created_ts, channel.dm_key),
    )
    now = wall_clock_ms()
    c.executemany("INSERT OR IGNORE INTO members (channel_id, user_id, joined_ts) VALUES (?, ?, ?)", [(channel.id, m, now) for m in members])


class SqliteMessageStore:
    """MessageStore on one SQLite file (see the module docstring for threads and degraded mode)."""

    def __init__(
        self,
        path: Path,
        *,
        max_batch: int = 256,
        readers: int = 2,
        # Timeouts
        timeout_s: float = 5.0,
        recovery_interval_s: float = 5.0,
    ) -> None:
        self.path = Path(path)
        self._max_batch = max_batch
        self._timeout_s = timeout_s
        # None until open() could open the file for writing (or a degraded store recovered).
        self._writer: GroupCommitWriter | None = None
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="sqlite-read")
        # One read-only connection per reader thread; all of them, to close them on close().
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        # Degraded mode (see the module docstring). Only ever goes from True to False; while
        # True, reads and recovery attempts run on the one fallback thread, which alone
        # touches the fallback connection.
        self._degraded = False
        self._fallback: sqlite3.Connection | None = None
        self._fallback_thread: ThreadPoolExecutor | None = None
        # Degraded: how often a write may try to reopen the file for writing (each try closes
        # and reopens connections), and the retry hint that writes refused for lack of space carry.
        self._recovery_interval_s = recovery_interval_s
        self._next_recovery = 0.0
        self._full_retry_ms = max(1000, int(recovery_interval_s * 1000))
        self._closed = False

    # Lifecycle

    async def open(self) -> None:
        try:
            await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, self._open_sync), 10 * self._timeout_s)
        except TimeoutError:
            raise Unavailable("message storage did not open in time", retry_after_ms=2000) from None
        except sqlite3.Error as exc:  # not a full or read-only disk (that opens degraded): locked, corrupt …
            raise storage_error(exc, self._full_retry_ms) from exc

    def _open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._start_writer(open_writer(self.path))
        except NotWritable as exc:
            self._fallback_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-degraded")
            self._fallback = open_fallback_reader(self.path)
            self._degraded = True
            reads = "serving reads only" if self._fallback is not None else "reads fail too"
            log.warning("%s: %s (%s); %s, writes are refused until it can write again", FULL, self.path, exc.reason, reads)

    def _start_writer(self, conn: sqlite3.Connection) -> None:
        writer = GroupCommitWriter(conn, self.path, max_batch=self._max_batch, timeout_s=self._timeout_s, full_retry_ms=self._full_retry_ms)
        writer.start()
        self._writer = writer

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, self._close_sync), 90)
        except TimeoutError:
            log.warning("sqlite store %s did not close within 90 s", self.path)

    def _close_sync(self) -> None:
        if self._fallback_thread is not None:
            self._fallback_thread.shutdown(wait=True)  # a recovery attempt under way ends first
            if self._fallback is not None:
                self._fallback.close()
                self._fallback = None
        self._readers.shutdown(wait=True)
        for conn in self._reader_conns:
            conn.close()
        # Last: only the last connection to close checkpoints and removes the WAL and its
        # index, and a read-only one cannot.
        if self._writer is not None:
            self._writer.stop()

    # Degraded mode

    async def _recover(self) -> bool:
        """Try to open the file for writing again, at most once per recovery interval.
        True when the store can take writes now."""
        now = time.monotonic()
        if self._fallback_thread is None or now < self._next_recovery:
            return not self._degraded
        self._next_recovery = now + self._recovery_interval_s
        try:
            await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(self._fallback_thread, self._try_writable), self._timeout_s)
        except TimeoutError:
            return False
        return not self._degraded

    def _try_writable(self) -> None:
        """Fallback thread (so no read runs meanwhile): leave degraded mode if the file can be written."""
        if not self._degraded or self._closed:
            return
        if self._fallback is not None:
            self._fallback.close()  # its exclusive lock would keep the writer out
            self._fallback = None
        try:
            conn = open_writer(self.path)
        except NotWritable:
            self._fallback = open_fallback_reader(self.path)
            return
        except Exception as exc:  # noqa: BLE001 - stay degraded, with reads, whatever went wrong
            log.warning("message storage %s could not be reopened for writing: %s: %s", self.path, type(exc).__name__, exc)
            self._fallback = open_fallback_reader(self.path)
            return
        self._start_writer(conn)
        self._degraded = False
        log.info("message storage %s is writable again", self.path)

    # Calls

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise Unavailable("store is closed")
        if self._degraded and not await self._recover():
            raise Unavailable(FULL, retry_after_ms=self._full_retry_ms)
        if self._writer is None:
            raise Unavailable("store is not open", retry_after_ms=1000)
        return await self._writer.write(fn)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise Unavailable("store is closed")

        def run() -> T:
            try:
                # Degraded: the fallback connection. Reads still queued on the fallback thread
                # when it recovered use a reader connection like any other.
                return fn(self._fallback if self._fallback is not None else self._reader())
            except sqlite3.Error as exc:
                raise storage_error(exc, self._full_retry_ms) from exc

        executor = self._fallback_thread if self._degraded and self._fallback_thread is not None else self._readers
        try:
            return await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(executor, run), self._timeout_s)
        except TimeoutError:
            raise Unavailable("store read timed out", retry_after_ms=1000) from None

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, readonly=True)
            self._local.conn = conn
            self._reader_conns.append(conn)  # list.append is atomic: no lock needed
        return conn

    async def ping(self) -> None:
        await self._read(lambda c: c.execute("SELECT 1").fetchone())

    # Channels and members

    async def create_channel(self, channel: Channel, members: list[str]) -> None:
        await self._write(lambda c: _insert_channel(c, channel, members))

    async def get_or_create_dm(self, channel: Channel, members: tuple[str, str]) -> tuple[Channel, bool]:
        def run(c: sqlite3.Connection) -> tuple[Channel, bool]:
            row = c.execute(f"SELECT {_CHANNEL_COLS} FROM channels WHERE dm_key = ?", (channel.dm_key,)).fetchone()
            if row is not None:
                return _row_to_channel(row), False
            _insert_channel(c, channel, members)
            return channel, True

        return await self._write(run)

    async def get_dm(self, dm_key: str) -> Channel | None:
        row = await self._read(lambda c: c.execute(f"SELECT {_CHANNEL_COLS} FROM channels WHERE dm_key = ?", (dm_key,)).fetchone())
        return _row_to_channel(row) if row else None

    async def get_channel(self, channel_id: int) -> Channel | None:
        row = await self._read(
            lambda c: c.execute(f"SELECT {_CHANNEL_COLS} FROM channels WHERE id = ?", (channel_id,)).fetchone()
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
            c.execute("INSERT INTO members (channel_id, user_id, joined_ts) VALUES (?, ?, ?)", (channel_id, user, wall_clock_ms()))
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
        return await self._write(lambda c: _insert(c, message))

    async def insert_messages(self, messages: Sequence[Message]) -> list[tuple[Message, bool]]:
        """One write (one savepoint of a group commit) for the whole batch; in order, so a key
        repeated in the batch finds the message its first occurrence stored."""
        one_channel(messages)
        return await self._write(lambda c: [_insert(c, m) for m in messages]) if messages else []

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

    # Notification outbox (chat/store/outbox.py; the SQL is chat/store/sqlite_outbox.py)

    async def outbox_put(self, notifications: Sequence[Notification]) -> None:
        if notifications:
            await self._write(lambda c: sqlite_outbox.put(c, notifications))

    async def outbox_claim(self, now_ms: int, *, limit: int, lease_ms: int, oldest_ms: int) -> list[OutboxItem]:
        # A reader first: the deliverer polls every second, and an idle outbox then costs no
        # turn of the one writer that every message write goes through.
        if not await self._read(lambda c: sqlite_outbox.any_due(c, now_ms)):
            return []
        return await self._write(lambda c: sqlite_outbox.claim(c, now_ms, limit, lease_ms, oldest_ms))

    async def outbox_reschedule(self, item: OutboxItem, due_ms: int) -> None:
        await self._write(lambda c: sqlite_outbox.reschedule(c, item, due_ms))

    async def outbox_delete(self, item: OutboxItem) -> None:
        await self._write(lambda c: sqlite_outbox.delete(c, item))
