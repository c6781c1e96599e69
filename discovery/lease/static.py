"""Static worker-ID lease (embedded mode): the configured ``CHAT_WORKER_ID``, one process per data dir.

- Exclusivity comes from ``<data_dir>/node.lock`` (:class:`~discovery.datadir.DataDirLock`):
  a second process on the same data dir is refused at :meth:`acquire` with
  :class:`~discovery.errors.DataDirInUse`. Two data dirs configured with the same worker
  ID cannot be detected here; that is what the ZooKeeper lease is for.
- The floor record lives in ``<data_dir>/worker-<id>.floor.json``, replaced atomically
  (temp file, fsync, rename) before minting under a new reservation, so a restart with
  the clock behind never mints below what an earlier run may have minted.
- :meth:`valid` is True from :meth:`acquire` until :meth:`close`: nothing else can take
  the ID from a process holding the lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from discovery.datadir import DataDirLock, write_atomic
from discovery.errors import DiscoveryError
from discovery.lease.base import MAX_WORKER_ID
from discovery.lease.core import CoreBackedLease, LeaseCore, wall_clock_ms
from discovery.lease.mint import FloorRecord, ReservePolicy

IO_TIMEOUT_S = 5.0  # a floor write (fsync) slower than this means a broken disk


class StaticWorkerLease(CoreBackedLease):
    def __init__(
        self,
        data_dir: Path,
        worker_id: int,
        *,
        holder: str = "",
        policy: ReservePolicy | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
        max_wait_ms: int = 1000,
    ) -> None:
        if not 0 <= worker_id <= MAX_WORKER_ID:
            raise ValueError(f"worker_id must be in 0..{MAX_WORKER_ID}, got {worker_id}")
        self.data_dir = data_dir
        self._configured_id = worker_id
        self._core = LeaseCore(holder=holder, policy=policy or ReservePolicy(), clock_ms=clock_ms, max_wait_ms=max_wait_ms)
        self._lock: DataDirLock | None = None
        self._held = False
        self._refresher: asyncio.Task[None] | None = None

    @property
    def path(self) -> Path:
        return self.data_dir / f"worker-{self._configured_id}.floor.json"

    async def acquire(self) -> int:
        """Lock the data dir, read the floor, durably reserve ahead; returns the configured ID."""
        if self._held:
            return self._configured_id
        self._lock = await asyncio.wait_for(asyncio.to_thread(DataDirLock.acquire, self.data_dir), IO_TIMEOUT_S)
        try:
            stored = await asyncio.wait_for(asyncio.to_thread(self._read), IO_TIMEOUT_S)
            core = self._core
            written = stored.reserve(core.policy.next_until(stored.reserved_until_ms, core.clock_ms()), core.holder)
            try:
                await self._write(written)
            except DiscoveryError:
                # A full or read-only disk: the node still starts (reads and health work), but
                # mints nothing until a reservation is durable; the refresher keeps trying (and
                # says so, once).
                written = stored
        except BaseException:
            self._lock.release()
            self._lock = None
            raise
        self._core.begin(self._configured_id, stored, written)
        self._held = True
        self._refresher = asyncio.create_task(self._core.keep_reserving(self._write), name="lease-reserve")
        self._core.announce(True, self._configured_id)
        return self._configured_id

    def valid(self) -> bool:
        return self._held

    async def close(self, *, last_minted_ms: int | None = None) -> None:
        if not self._held:
            return
        self._held = False
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
        try:
            await self._write(self._core.record.released(last_minted_ms, self._core.floor_ms, self._core.holder))
        finally:
            self._core.end()
            self._core.announce(False, None)
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def _read(self) -> FloorRecord:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return FloorRecord()
        try:
            return FloorRecord.decode(data)
        except ValueError as exc:
            raise DiscoveryError(f"worker floor file {self.path} is unreadable ({exc}); minting would risk duplicate IDs") from None

    async def _write(self, record: FloorRecord) -> None:
        try:
            await asyncio.wait_for(asyncio.to_thread(write_atomic, self.path, record.encode()), IO_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise DiscoveryError(f"cannot write worker floor file {self.path}: {exc}") from None
