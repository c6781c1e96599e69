"""ZooKeeper leader election: an ephemeral-sequential znode per participant under
``<root>/election/<name>``; the lowest sequence number leads, every other participant
watches only its predecessor (no herd when the leader goes).

Built on kazoo's async API rather than its ``Election`` recipe: the recipe blocks a thread
per participant for as long as it leads and cannot give leadership up at SUSPENDED.

Connection states:
- SUSPENDED: leadership is given up at once (listeners hear False).
- CONNECTED on the same session: the participant's znode is still there, so the
  order is read again (kazoo dropped the watches) and the first one leads again.
- LOST: the znode went with the session; the participant joins again at the end of
  the line on the new session.
- Leadership also requires the session to be certainly alive
  (:class:`~discovery.claim.SessionClaim`): a leader whose ZooKeeper went silent stops
  leading before its session could expire and hand leadership to the next in line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from kazoo.exceptions import NoNodeError

from discovery.claim import SessionClaim
from discovery.errors import ZooKeeperUnavailable
from discovery.listeners import Listeners
from discovery.zk import ConnEvent, ConnState, ZkConnection

log = logging.getLogger(__name__)

RETRY_S = 0.5  # after ZooKeeper answered an election step with an error


def _sequence(name: str) -> int:
    tail = name.rsplit("_", 1)[-1]
    return int(tail) if tail.isascii() and tail.isdigit() else -1


class ZooKeeperElection:
    def __init__(self, conn: ZkConnection, name: str, *, identifier: str = "", root: str = "/chat", margin_fraction: float = 0.2) -> None:
        self._conn = conn
        self._dir = f"{root}/election/{name}"
        self._identifier = identifier  # stored in our znode, for operators
        self._claim = SessionClaim(conn, margin_fraction, self._on_lapse)
        self._mine: str | None = None  # our znode's name; None: not in line
        self._first = False  # our znode was first when last read
        self._announced = False
        self._listeners: Listeners[bool] = Listeners("election")
        self._decided = asyncio.Event()  # the first outcome is known: start() may return
        self._runner: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._closed = False

    @property
    def is_leader(self) -> bool:
        return self._first and self._claim.valid()

    async def start(self) -> None:
        self._unsubscribe = self._conn.subscribe(self._on_conn)
        await self._conn.call("ensure_path", self._dir)
        self._run()
        try:
            await asyncio.wait_for(self._decided.wait(), 3 * self._conn.op_timeout_s)
        except TimeoutError:
            raise ZooKeeperUnavailable(f"election {self._dir}: no outcome within {3 * self._conn.op_timeout_s:g} s", retry_after_ms=1000) from None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
        await self._stop()
        mine = self._mine
        if mine is not None and self._claim.session == self._conn.session_id:
            try:
                await self._conn.call("delete", f"{self._dir}/{mine}")
            except (ZooKeeperUnavailable, NoNodeError):
                pass  # it goes with the session anyway
        self._leave()

    def subscribe(self, callback: Callable[[bool], None]) -> Callable[[], None]:
        return self._listeners.add(callback)

    # The line

    def _run(self) -> None:
        if not self._closed and (self._runner is None or self._runner.done()):
            self._runner = asyncio.get_running_loop().create_task(self._loop(), name=f"election {self._dir}")

    async def _stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None and runner is not asyncio.current_task():
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)

    async def _loop(self) -> None:
        """Join the line if needed, read the order, then wait for what can change it; forever."""
        while not self._closed and self._conn.state is ConnState.CONNECTED:
            try:
                await self._step()
            except ZooKeeperUnavailable as exc:
                log.warning("election %s: %s", self._dir, exc.message)
                await asyncio.sleep(RETRY_S)  # connected, but ZooKeeper answered badly: retry

    async def _step(self) -> None:
        if self._mine is None:
            path, session = await self._conn.call_on_session("create", f"{self._dir}/n_", self._identifier.encode(), ephemeral=True, sequence=True)
            if session is None:
                return  # the session changed meanwhile: that znode is not ours to count on
            self._mine = path.rsplit("/", 1)[-1]
            self._claim.hold(session)
        children, answered_on = await self._conn.call_on_session("get_children", self._dir)
        if answered_on is None or answered_on != self._claim.session:
            self._leave()  # our znode belonged to a session that is gone
            return
        self._claim.confirm(answered_on)
        line = sorted((c for c in children if _sequence(c) >= 0), key=_sequence)
        if self._mine not in line:
            self._leave()  # deleted under us: join again
            return
        position = line.index(self._mine)
        self._first = position == 0
        self._announce()
        self._decided.set()
        # Leader: watch our own znode; others: only the predecessor. Re-read at least once per
        # session timeout anyway (a bounded wait, and a cure for anything missed).
        watched = line[0] if position == 0 else line[position - 1]
        gone, watcher = self._conn.one_shot()
        if await self._conn.call("exists", f"{self._dir}/{watched}", watch=watcher) is None:
            return
        try:
            await asyncio.wait_for(gone, self._conn.session_timeout_s)
        except TimeoutError:
            pass

    def _leave(self) -> None:
        self._mine = None
        self._first = False
        self._claim.release()
        self._announce()

    def _announce(self) -> None:
        leader = self.is_leader
        if leader == self._announced:
            return
        self._announced = leader
        log.info("election %s: %s", self._dir, "leading" if leader else "not leading")
        self._listeners.notify(leader)

    def _on_lapse(self, at: float) -> None:
        self._announce()  # no longer certainly alive: not leading until ZooKeeper answers again

    def _on_conn(self, event: ConnEvent) -> None:
        if self._closed:
            return
        if event.state is ConnState.CONNECTED:
            if self._claim.session is not None and event.session_id != self._claim.session:
                self._leave()
            self._run()
            return
        self._first = False  # given up at once: the session may be gone already
        if event.state is ConnState.LOST:
            self._leave()
        self._announce()
        if self._runner is not None:
            self._runner.cancel()  # a fresh one starts at the next CONNECTED
            self._runner = None
