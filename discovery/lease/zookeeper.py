"""ZooKeeper worker-ID lease: an ephemeral ``<root>/workers/<id>`` znode per holder, and a
persistent ``<root>/worker-floors/<id>`` floor record that outlives every session.

Connection states (the rules the minter relies on):
- CONNECTED, lease confirmed: :meth:`valid` is True until ``alive_until - margin``,
  where ``alive_until`` = (send time of the last request answered on the lease's
  session) + the negotiated session timeout T (see :mod:`discovery.liveness`); the
  connection's heartbeat (every T/6) keeps pushing it ahead. ``margin`` defaults to
  0.2·T: the server cannot expire the session, and so cannot hand the ID to anyone
  else, before ``alive_until``, so ``valid()`` turns False at least 0.2·T before the
  earliest moment another node could hold the ID.
- SUSPENDED: nothing is answered, the deadline stops moving, and :meth:`valid` turns
  False at the latest ``T - margin`` after the last answered request, i.e. at most
  0.8·T after ZooKeeper went silent (kazoo itself notices only after 2T/3). The same
  holds for a process that was paused (GC, SIGSTOP): the deadline is on the monotonic clock.
- Once lapsed, validity is *sticky*: it comes back only after a request answered on the
  lease's session confirms the lease znode is still ours (after CONNECTED on the same
  session, or when ZooKeeper answers again).
- LOST (session expired), the lease znode deleted, or the floor record changed by
  someone else: the lease is dropped (worker_id None in the event) and re-acquired in
  the background on the next session, preferring the same ID; the new holder's floor
  is above every reservation ever written for that ID, so even the same ID never
  repeats a (worker ID, millisecond) pair.

Floor writes are compare-and-set on the znode version: a holder that lost its lease can
never overwrite a newer holder's reservation, and a floor never goes down.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import zlib
from collections.abc import Callable, Iterator

from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError
from kazoo.protocol.states import EventType, WatchedEvent

from discovery.background import Background
from discovery.claim import SessionClaim
from discovery.errors import LeaseNotHeld, NoFreeWorkerId, ZooKeeperUnavailable
from discovery.lease.base import MAX_WORKER_ID
from discovery.lease.core import CoreBackedLease, LeaseCore, wall_clock_ms
from discovery.lease.mint import FloorRecord, ReservePolicy
from discovery.zk import ConnEvent, ConnState, ZkConnection

log = logging.getLogger(__name__)

CONFIRM_RETRY_S = 0.2  # between confirmation attempts while ZooKeeper answers with errors
REACQUIRE_MAX_BACKOFF_S = 2.0


class ZooKeeperWorkerLease(CoreBackedLease):
    def __init__(
        self,
        conn: ZkConnection,
        node_id: str,
        *,
        root: str = "/chat",
        preferred: int | None = None,
        margin_fraction: float = 0.2,
        policy: ReservePolicy | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
        max_wait_ms: int = 1000,
        acquire_timeout_s: float = 10.0,
    ) -> None:
        self._conn = conn
        self._node_id = node_id
        self._workers = f"{root}/workers"
        self._floors = f"{root}/worker-floors"
        # Tried first at every claim, stable per node: a restarted node tends to get its old ID
        # back, so few IDs are ever used and fewer floors sit ahead of the clock.
        self._preferred = preferred if preferred is not None else zlib.crc32(node_id.encode()) % (MAX_WORKER_ID + 1)
        self._acquire_timeout_s = acquire_timeout_s
        self._core = LeaseCore(holder=node_id, policy=policy or ReservePolicy(), clock_ms=clock_ms, max_wait_ms=max_wait_ms)
        # Held on the session owning our lease znode; session None: no lease.
        self._claim = SessionClaim(conn, margin_fraction, self._on_lapse)
        self._floor_version = -1  # znode version of the floor record we wrote last (for CAS)
        self._wanted = False  # acquired once and not closed: re-acquire after losses
        self._closed = False
        self._connected = asyncio.Event()
        self._unsubscribe: Callable[[], None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._repair: asyncio.Task[None] | None = None  # confirming or re-acquiring
        self._background = Background()  # watch re-arms, leftover deletes
        # One watcher object: kazoo keeps a set per path, so re-watching never stacks duplicates.
        self._node_watcher = conn.bridge(self._on_node_event)

    # The port

    @property
    def margin_s(self) -> float:
        """How long before the session could expire on the server ``valid()`` turns False."""
        return self._claim.margin_s

    @property
    def valid_until(self) -> float:
        """Monotonic instant at which :meth:`valid` turns False unless ZooKeeper answers again."""
        return self._claim.valid_until()

    def valid(self) -> bool:
        return self._claim.valid()

    async def acquire(self) -> int:
        """Claim a free worker ID (bounded by ``acquire_timeout_s``) and reserve minting time."""
        if self._closed:
            raise LeaseNotHeld("the lease was closed")
        if self._claim.session is not None and self._core.worker_id is not None:
            return self._core.worker_id
        if self._unsubscribe is None:
            self._unsubscribe = self._conn.subscribe(self._on_conn)
        if self._conn.state is ConnState.CONNECTED:
            self._connected.set()
        worker_id = await self._claim_free_id()
        self._wanted = True
        return worker_id

    async def close(self, *, last_minted_ms: int | None = None) -> None:
        self._closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
        for task in (self._refresher, self._repair):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self._background.cancel()
        worker_id, session = self._core.worker_id, self._claim.session
        if worker_id is not None and session is not None and self.valid():
            try:
                await self._write_floor(self._core.record.released(last_minted_ms, self._core.floor_ms, self._core.holder))
                await self._conn.call("delete", f"{self._workers}/{worker_id}")
            except (ZooKeeperUnavailable, LeaseNotHeld, NoNodeError) as exc:
                log.warning("worker %s: clean release failed (%s); the floor keeps the whole reservation", worker_id, exc)
        self._claim.release()
        self._core.end()
        self._core.announce(False, None)

    # Claiming

    async def _claim_free_id(self) -> int:
        deadline = time.monotonic() + self._acquire_timeout_s
        await self._conn.call("ensure_path", self._workers)
        await self._conn.call("ensure_path", self._floors)
        children = await self._conn.call("get_children", self._workers)
        taken = {int(c) for c in children if c.isascii() and c.isdigit()}
        for worker_id in self._candidates(taken):
            if time.monotonic() > deadline:
                raise NoFreeWorkerId(f"no worker ID could be claimed within {self._acquire_timeout_s:g} s", retry_after_ms=1000)
            session = await self._create_lease_node(worker_id)
            if session is None:
                continue
            self._core.holder = f"{self._node_id}@{session:x}"
            try:
                stored, written, version = await self._reserve(worker_id)
            except ValueError as exc:
                log.error("worker %d skipped: its floor record is corrupt (%s)", worker_id, exc)
                await self._delete_if_ours(worker_id, session)
                continue
            except BaseException:
                await asyncio.shield(self._delete_if_ours(worker_id, session))
                raise
            self._take(worker_id, session, stored, written, version)
            return worker_id
        raise NoFreeWorkerId(f"all {MAX_WORKER_ID + 1} worker IDs are leased by live nodes", retry_after_ms=5000)

    def _candidates(self, taken: set[int]) -> Iterator[int]:
        for i in range(MAX_WORKER_ID + 1):
            worker_id = (self._preferred + i) % (MAX_WORKER_ID + 1)
            if worker_id not in taken:
                yield worker_id

    async def _create_lease_node(self, worker_id: int) -> int | None:
        """Create the ephemeral lease znode; the owning session, or None if someone else holds it."""
        path = f"{self._workers}/{worker_id}"
        try:
            _, session = await self._conn.call_on_session("create", path, json.dumps({"node_id": self._node_id}).encode(), ephemeral=True)
        except NodeExistsError:
            session = None
        if session is not None:
            return int(session)
        # Taken, or the session changed while we waited: it is ours only if our session owns it
        # (e.g. a create whose answer we stopped waiting for earlier).
        stat, session = await self._conn.call_on_session("exists", path)
        return session if stat is not None and session is not None and stat.ephemeralOwner == session else None

    async def _reserve(self, worker_id: int) -> tuple[FloorRecord, FloorRecord, int]:
        """Read the floor record and durably write our reservation (CAS): (found, written, version)."""
        path = f"{self._floors}/{worker_id}"
        core = self._core
        for _ in range(5):
            try:
                data, stat = await self._conn.call("get", path)
                version: int | None = stat.version
            except NoNodeError:
                data, version = b"", None
            stored = FloorRecord.decode(data)
            written = stored.reserve(core.policy.next_until(stored.reserved_until_ms, core.clock_ms()), core.holder)
            try:
                if version is None:
                    await self._conn.call("create", path, written.encode())
                    return stored, written, 0
                new_stat = await self._conn.call("set", path, written.encode(), version=version)
                return stored, written, int(new_stat.version)
            except (NodeExistsError, BadVersionError):
                continue  # another writer got in between: read again
        raise ZooKeeperUnavailable(f"the floor of worker ID {worker_id} kept changing under concurrent writers", retry_after_ms=1000)

    def _take(self, worker_id: int, session: int, stored: FloorRecord, written: FloorRecord, version: int) -> None:
        self._claim.hold(session)
        self._floor_version = version
        self._core.begin(worker_id, stored, written)
        if self._refresher is not None:
            self._refresher.cancel()  # it may be waiting on the previous reservation's schedule
        self._refresher = asyncio.create_task(self._core.keep_reserving(self._write_floor), name="lease-reserve")
        self._announce()
        self._background.spawn(self._watch_node(worker_id, session))
        log.info("worker ID %d leased (floor %d, reserved until %d)", worker_id, self._core.floor_ms, written.reserved_until_ms)

    async def _write_floor(self, record: FloorRecord) -> None:
        worker_id = self._core.worker_id
        if worker_id is None or not self.valid():
            raise LeaseNotHeld("the worker-ID lease is not certainly held; the reservation is not extended")
        path = f"{self._floors}/{worker_id}"
        try:
            stat = await self._conn.call("set", path, record.encode(), version=self._floor_version)
        except BadVersionError:
            # Our own earlier write may have landed without an answer: adopt it if it is ours.
            data, stat = await self._conn.call("get", path)
            try:
                holder = FloorRecord.decode(data).holder
            except ValueError:
                holder = ""
            if holder != self._core.holder:
                self._lose(f"another holder changed the floor of worker {worker_id}")
                raise LeaseNotHeld(f"worker {worker_id} was taken over") from None
            stat = await self._conn.call("set", path, record.encode(), version=stat.version)
        except NoNodeError:
            self._lose(f"the floor record of worker {worker_id} was deleted")
            raise LeaseNotHeld(f"worker {worker_id}: floor record deleted") from None
        self._floor_version = stat.version

    async def _delete_if_ours(self, worker_id: int, session: int) -> None:
        path = f"{self._workers}/{worker_id}"
        try:
            stat = await self._conn.call("exists", path)
            if stat is not None and stat.ephemeralOwner == session:
                await self._conn.call("delete", path, version=stat.version)
        except (ZooKeeperUnavailable, NoNodeError, BadVersionError):
            pass  # gone already, or it goes with the session

    # Keeping it

    async def _watch_node(self, worker_id: int, session: int) -> None:
        """Watch our lease znode; confirm it is still ours (this also answers on the session)."""
        path = f"{self._workers}/{worker_id}"
        try:
            stat, answered_on = await self._conn.call_on_session("exists", path, watch=self._node_watcher)
        except ZooKeeperUnavailable:
            return  # the next CONNECTED event confirms again
        if self._claim.session != session:
            return
        if stat is None or stat.ephemeralOwner != session:
            self._lose(f"lease znode of worker {worker_id} is gone")
        elif self._claim.confirm(answered_on):
            self._announce()

    def _on_node_event(self, event: WatchedEvent) -> None:
        worker_id = self._core.worker_id
        if event.type == EventType.DELETED and worker_id is not None and event.path == f"{self._workers}/{worker_id}":
            self._lose(f"lease znode of worker {worker_id} was deleted")
        elif self._claim.session is not None and worker_id is not None:
            self._background.spawn(self._watch_node(worker_id, self._claim.session))

    def _on_lapse(self, at: float) -> None:
        log.warning("worker %s: lease validity lapsed (no ZooKeeper answer for %.1f s)", self._core.worker_id, time.monotonic() - self._conn.last_good)
        self._announce(at=at)
        self._start_repair()

    def _lose(self, reason: str) -> None:
        if self._claim.session is None:
            return
        log.warning("worker %s: lease lost: %s", self._core.worker_id, reason)
        stale = (self._core.worker_id, self._claim.session)
        ended = self._claim.release()
        self._core.end()
        self._core.announce(False, None, at=ended)
        if stale[0] is not None and self._conn.session_id == stale[1]:
            self._background.spawn(self._delete_if_ours(stale[0], stale[1]))
        self._start_repair()

    def _announce(self, at: float | None = None) -> None:
        self._core.announce(self.valid(), self._core.worker_id if self._claim.session is not None else None, at)

    def _on_conn(self, event: ConnEvent) -> None:
        if self._closed:
            return
        if event.state is ConnState.CONNECTED:
            self._connected.set()
            if self._claim.session is not None and event.session_id != self._claim.session:
                self._lose("the ZooKeeper session changed")
            else:
                self._start_repair()
        else:
            self._connected.clear()
            if event.state is ConnState.LOST:
                self._lose("the ZooKeeper session expired")

    def _start_repair(self) -> None:
        if self._wanted and not self._closed and (self._repair is None or self._repair.done()):
            self._repair = asyncio.get_running_loop().create_task(self._repair_loop(), name="lease-repair")

    async def _repair_loop(self) -> None:
        """Confirm the lease on its session, or claim a new one; until done or closed."""
        backoff = CONFIRM_RETRY_S
        while not self._closed:
            if self.valid():
                return
            await self._connected.wait()
            try:
                session = self._claim.session
                if session is not None:
                    worker_id = self._core.worker_id
                    assert worker_id is not None
                    await self._watch_node(worker_id, session)
                else:
                    await self._claim_free_id()
                backoff = CONFIRM_RETRY_S
            except (ZooKeeperUnavailable, NoFreeWorkerId) as exc:
                log.warning("worker-ID lease repair: %s", exc.message)
            if not self.valid():
                await asyncio.sleep(backoff)  # ZooKeeper answers but not well: retry with backoff
                backoff = min(backoff * 2, REACQUIRE_MAX_BACKOFF_S)
