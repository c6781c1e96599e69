"""The SQLite store's writer: one thread that group-commits.

It takes every write waiting in its queue (up to ``max_batch``), runs each in its own
savepoint inside one transaction, and hands the outcomes to their event loops only after
``COMMIT`` returned (WAL, ``synchronous=FULL``: fsynced), through one
:class:`~chat.store.bridge.Mailbox` per loop. One fsync and one loop wake-up thus cover a
burst of sends, which is what keeps send→ack latency flat under load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from chat.errors import Unavailable
from chat.store.bridge import Item, Mailbox
from chat.store.sqlite_file import FULL, cannot_write, storage_error

log = logging.getLogger(__name__)
T = TypeVar("T")


class _WriteJob:
    __slots__ = ("fn", "future", "mailbox")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any], future: asyncio.Future[Any], mailbox: Mailbox) -> None:
        self.fn = fn
        self.future = future
        # Of the loop the caller waits on: the outcome goes back through it.
        self.mailbox = mailbox


class GroupCommitWriter:
    """Owns the writer connection and its thread; :meth:`write` is called on event loops."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, max_batch: int, timeout_s: float, full_retry_ms: int) -> None:
        self._conn = conn
        # For log lines only.
        self._path = path
        # Bounds one group commit, so a flood cannot hold the write lock for long.
        self._max_batch = max_batch
        self._timeout_s = timeout_s
        # The retry hint of writes refused for lack of space.
        self._full_retry_ms = full_retry_ms
        # Bounded: a writer that falls this far behind makes callers wait (backpressure), not grow memory.
        self._queue: queue.Queue[_WriteJob | None] = queue.Queue(maxsize=10_000)
        # Writer → loop hand-off for the loop writes come from (replaced if that changes).
        self._mailbox: Mailbox | None = None
        # Writer thread only: writes are failing for lack of space, and that was logged once.
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="sqlite-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Blocking: commit what is queued, then close the connection (waits at most ``timeout_s``)."""
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            log.warning("sqlite writer for %s did not take its stop within %.0f s", self._path, timeout_s)
            return
        self._thread.join(timeout=timeout_s)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in the next group commit; returns once it is durable. Raises
        :class:`Unavailable` when the queue is full, on a timeout or a storage error."""
        loop = asyncio.get_running_loop()
        mailbox = self._mailbox
        if mailbox is None or mailbox.loop is not loop:
            mailbox = self._mailbox = Mailbox(loop, name="sqlite")
        future: asyncio.Future[T] = loop.create_future()
        try:
            self._queue.put_nowait(_WriteJob(fn, future, mailbox))
        except queue.Full:
            raise Unavailable("store write queue is full", retry_after_ms=200) from None
        try:
            return await asyncio.wait_for(future, self._timeout_s)
        except TimeoutError:
            raise Unavailable("store write timed out", retry_after_ms=1000) from None

    # The thread

    def _run(self) -> None:
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
                self._commit(batch)
                if stop:
                    return
        finally:
            self._conn.close()

    def _commit(self, batch: list[_WriteJob]) -> None:
        conn = self._conn
        outcomes: list[tuple[Any, BaseException | None]] = []
        full: sqlite3.Error | None = None  # the first "cannot write" error of this batch
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
                    if isinstance(exc, sqlite3.Error):
                        full = full or (exc if cannot_write(exc) else None)
                        outcomes.append((None, storage_error(exc, self._full_retry_ms)))
                    else:
                        outcomes.append((None, exc))
                else:
                    conn.execute("RELEASE job")
                    outcomes.append((result, None))
            conn.execute("COMMIT")
            committed = True
        except sqlite3.Error as exc:
            committed = False
            if cannot_write(exc):
                full = exc
            else:
                log.exception("sqlite group commit failed")
            with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already
                conn.execute("ROLLBACK")
            outcomes = [(None, storage_error(exc, self._full_retry_ms))] * len(batch)
        self._note_space(full, committed)
        # Outcomes are handed over only now, after COMMIT returned: the writes are durable.
        by_mailbox: dict[Mailbox, list[Item]] = {}
        for job, (result, error) in zip(batch, outcomes, strict=True):
            by_mailbox.setdefault(job.mailbox, []).append((job.future, result, error))
        for mailbox, items in by_mailbox.items():
            mailbox.put_many(items)

    def _note_space(self, full: sqlite3.Error | None, committed: bool) -> None:
        """One warning when writes start failing for lack of space (not one per batch: the log
        may be on the same disk), one line when a commit works again."""
        if full is not None:
            if not self._failing:
                self._failing = True
                reason = getattr(full, "sqlite_errorname", None) or str(full)
                log.warning("%s: %s (%s); writes are refused until it has room again", FULL, self._path, reason)
        elif committed and self._failing:
            self._failing = False
            log.info("message storage %s is writable again", self._path)
