"""The one ZooKeeper connection of a node: kazoo, bridged to asyncio.

Contract:
- One :class:`ZkConnection` (one ZooKeeper session) per node, shared by the registry,
  the worker-ID lease, the configuration store and leader elections.
- Nothing here blocks the event loop. ``start``/``close`` run kazoo's blocking calls in
  the default executor with a bound; every operation goes through kazoo's ``*_async``
  API and resolves an asyncio future with ``loop.call_soon_threadsafe``. State
  listeners and watches run on kazoo's threads, where they only post to the loop.
- :meth:`ZkConnection.start` raises :class:`ZooKeeperUnavailable` (one line) when no
  session is established within ``connect_timeout_s``; every call is bounded by
  ``op_timeout_s`` and raises :class:`ZooKeeperUnavailable` on timeout or connection
  loss. Server answers such as ``NoNodeError`` or ``BadVersionError`` pass through as
  kazoo exceptions: adapters act on them.
- States: CONNECTED, SUSPENDED (connection down, the session may or may not still
  exist on the server), LOST (the session expired or was closed; kazoo then opens a new
  one by itself). kazoo fires and forgets every watch at SUSPENDED and LOST, so users
  re-read and re-watch on each CONNECTED event (:class:`ConnEvent`).
- Liveness (see :mod:`discovery.liveness`): a heartbeat read every ``heartbeat_s``
  (default T/6) and every answered call record the last known-good moment;
  :meth:`ZkConnection.certainly_alive` says whether a session cannot have expired yet.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    ConnectionLoss,
    KazooException,
    OperationTimeoutError,
    SessionExpiredError,
    SessionMovedError,
    ZookeeperError,
)
from kazoo.protocol.serialization import Connect
from kazoo.protocol.states import EventType, WatchedEvent

from discovery.errors import ZooKeeperUnavailable
from discovery.listeners import Listeners
from discovery.liveness import Liveness

log = logging.getLogger(__name__)

# Errors that say nothing about whether the server saw the request.
_CONNECTION_ERRORS = (ConnectionLoss, SessionExpiredError, OperationTimeoutError, SessionMovedError)
_HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::([0-9]{1,5}))?$")
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


class ConnState(enum.Enum):
    CONNECTED = "connected"
    SUSPENDED = "suspended"
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class ConnEvent:
    """A change of connection state, delivered on the event loop."""

    state: ConnState
    session_id: int | None  # the session now connected (None when SUSPENDED or LOST)


@dataclass(frozen=True, slots=True)
class ZkAddress:
    hosts: str  # "host:port,host:port"
    chroot: str  # "" or "/a/b": every path of the node lives under it

    def __str__(self) -> str:
        return self.hosts + self.chroot


def parse_hosts(text: str) -> ZkAddress:
    """``host[:port],…[/chroot]`` → :class:`ZkAddress`; raises ValueError naming the problem."""
    text = text.strip()
    hosts_part, slash, chroot = text.partition("/")
    hosts: list[str] = []
    for part in hosts_part.split(","):
        raw = part.strip()
        match = _HOST_RE.match(raw)
        if match is None:
            raise ValueError(f"ZooKeeper hosts {text!r}: {raw!r} is not host[:port]")
        port = int(match.group(2) or 2181)
        if not 0 < port < 65536:
            raise ValueError(f"ZooKeeper hosts {text!r}: port {port} is out of range")
        hosts.append(f"{match.group(1)}:{port}")
    root = ""
    if slash:
        segments = chroot.strip("/").split("/") if chroot.strip("/") else []
        for seg in segments:
            if not _SEGMENT_RE.match(seg) or seg in (".", ".."):
                raise ValueError(f"ZooKeeper hosts {text!r}: bad chroot segment {seg!r}")
        root = "/" + "/".join(segments) if segments else ""
    return ZkAddress(",".join(hosts), root)


def _session_of(client: KazooClient) -> int | None:
    client_id = client.client_id
    return int(client_id[0]) if client_id else None


class ZkConnection:
    """Owns the node's kazoo client; see the module docstring for the contract."""

    def __init__(
        self,
        hosts: str,
        *,
        # Timeouts
        session_timeout_s: float = 10.0,
        connect_timeout_s: float = 5.0,
        op_timeout_s: float = 5.0,
        heartbeat_s: float | None = None,
    ) -> None:
        self.address = parse_hosts(hosts)
        # Asked of the server; it may negotiate another value within its min/max bounds.
        self.requested_timeout_s = session_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.op_timeout_s = op_timeout_s
        # Often enough that a healthy session's deadline stays far ahead of the clock.
        self.heartbeat_s = heartbeat_s if heartbeat_s is not None else session_timeout_s / 6
        self._liveness = Liveness(session_timeout_s)
        self._client: KazooClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._state = ConnState.LOST
        self._listeners: Listeners[ConnEvent] = Listeners("ZooKeeper state")
        # Set by a CONNECTED event so the heartbeat confirms the session at once.
        self._kick = asyncio.Event()
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._closed = False

    # Public state (read on the event loop)

    @property
    def state(self) -> ConnState:
        return self._state

    @property
    def session_id(self) -> int | None:
        """The session the server last answered on (None before the first answer, after LOST)."""
        return self._liveness.session_id

    @property
    def session_timeout_s(self) -> float:
        """The negotiated session timeout (the requested one if it could not be read)."""
        return self._liveness.timeout_s

    @property
    def last_good(self) -> float:
        """Monotonic send time of the newest request answered on the current session."""
        return self._liveness.last_good

    @property
    def alive_until(self) -> float:
        """Monotonic instant before which the server cannot have expired the session."""
        return self._liveness.alive_until

    def deadline_of(self, session_id: int | None) -> float:
        """Until when ``session_id`` was certainly alive (monotonic; kept after LOST)."""
        return self._liveness.deadline_of(session_id)

    def certainly_alive(self, session_id: int | None, margin_s: float) -> bool:
        """True while ``session_id`` is the current session and cannot have expired (O(1))."""
        return self._liveness.certainly_alive(session_id, time.monotonic(), margin_s)

    def subscribe(self, listener: Callable[[ConnEvent], None]) -> Callable[[], None]:
        """Call ``listener`` on the loop at each state change; returns an unsubscribe function."""
        return self._listeners.add(listener)

    # Lifecycle

    async def start(self) -> None:
        """Connect (bounded by ``connect_timeout_s``) and create the chroot if missing."""
        if self._client is not None:
            raise RuntimeError("ZkConnection.start called twice")
        loop = self._loop = asyncio.get_running_loop()
        # The chroot is applied after it exists: kazoo would refuse every path under a missing one.
        client = KazooClient(
            hosts=self.address.hosts,
            timeout=self.requested_timeout_s,
            # Reconnect fast (≤ 1 s apart) so a restarted server finds the session still alive.
            connection_retry={"max_tries": -1, "delay": 0.05, "backoff": 2, "max_delay": 1.0},
        )
        client.add_listener(self._on_kazoo_state)
        self._spy_negotiated_timeout(client)
        self._client = client
        try:
            await asyncio.wait_for(loop.run_in_executor(None, client.start, self.connect_timeout_s), self.connect_timeout_s + 5)
        except (KazooException, TimeoutError, OSError, client.handler.timeout_exception):
            self._client = None
            await self._stop(client)
            raise ZooKeeperUnavailable(
                f"ZooKeeper at {self.address} did not accept a session within {self.connect_timeout_s:g} s (is it running?)",
                retry_after_ms=1000,
            ) from None
        self._state = ConnState.CONNECTED
        try:
            if self.address.chroot:
                await self.call("ensure_path", self.address.chroot)
                client.chroot = self.address.chroot
            await self.call("exists", "/")  # the first known-good moment
        except BaseException:
            await self.close()
            raise
        self._heartbeat_task = asyncio.create_task(self._heartbeat(), name="zk-heartbeat")

    async def close(self) -> None:
        """Close the session (its ephemeral znodes vanish at once). Close users first."""
        self._closed = True
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            await asyncio.gather(self._heartbeat_task, return_exceptions=True)
            self._heartbeat_task = None
        client, self._client = self._client, None
        if client is not None:
            await self._stop(client)
        self._liveness.on_lost()
        self._state = ConnState.LOST

    async def _stop(self, client: KazooClient) -> None:
        loop = asyncio.get_running_loop()

        def stop_and_close() -> None:
            client.stop()
            client.close()

        try:
            await asyncio.wait_for(loop.run_in_executor(None, stop_and_close), self.connect_timeout_s + 5)
        except (KazooException, TimeoutError, OSError, client.handler.timeout_exception) as exc:
            log.warning("ZooKeeper client did not stop cleanly: %s", type(exc).__name__)

    # Operations

    async def call(self, op: str, *args: Any, timeout_s: float | None = None, **kwargs: Any) -> Any:
        """``await conn.call("get", path, watch=...)`` runs kazoo's ``get_async`` (bounded)."""
        value, _ = await self.call_on_session(op, *args, timeout_s=timeout_s, **kwargs)
        return value

    async def call_on_session(self, op: str, *args: Any, timeout_s: float | None = None, **kwargs: Any) -> tuple[Any, int | None]:
        """Like :meth:`call`, and also the session that answered (None if it changed meanwhile)."""
        client = self._client
        loop = self._loop
        if client is None or loop is None or self._closed:
            raise ZooKeeperUnavailable("the ZooKeeper connection is closed")
        future: asyncio.Future[tuple[Any, int | None]] = loop.create_future()
        sent_at = time.monotonic()
        sent_on = _session_of(client)

        def done(result: Any) -> None:  # kazoo's completion thread: post, never block
            answered_on = _session_of(client)
            self._post(self._complete, future, op, result, sent_on if sent_on == answered_on else None, sent_at)

        try:
            getattr(client, f"{op}_async")(*args, **kwargs).rawlink(done)
        except (ConnectionLoss, SessionExpiredError) as exc:
            raise ZooKeeperUnavailable(f"ZooKeeper {op} failed: {type(exc).__name__}", retry_after_ms=1000) from None
        limit = self.op_timeout_s if timeout_s is None else timeout_s
        try:
            return await asyncio.wait_for(future, limit)
        except TimeoutError:
            raise ZooKeeperUnavailable(f"ZooKeeper did not answer {op} within {limit:g} s", retry_after_ms=1000) from None

    def _complete(self, future: asyncio.Future[tuple[Any, int | None]], op: str, result: Any, session_id: int | None, sent_at: float) -> None:
        try:
            value = result.get_nowait()
        except _CONNECTION_ERRORS as exc:
            if not future.done():
                future.set_exception(ZooKeeperUnavailable(f"ZooKeeper {op} failed: {type(exc).__name__}", retry_after_ms=1000))
            return
        except ZookeeperError as exc:  # the server answered (NoNode, NodeExists, BadVersion, …)
            self._answered(session_id, sent_at)
            if not future.done():
                future.set_exception(exc)
            return
        except Exception as exc:  # noqa: BLE001 - handed to the caller, never lost on a thread
            if not future.done():
                future.set_exception(exc)
            return
        self._answered(session_id, sent_at)
        if not future.done():
            future.set_result((value, session_id))

    def _answered(self, session_id: int | None, sent_at: float) -> None:
        if session_id is not None and not self._closed:
            self._liveness.on_response(session_id, sent_at)

    def bridge(self, callback: Callable[[WatchedEvent], None]) -> Callable[[WatchedEvent], None]:
        """Wrap a watch callback so it runs on the event loop (kazoo calls it on its thread).

        Session events (type NONE, fired by kazoo at SUSPENDED/LOST) are dropped: users
        re-read on the next CONNECTED event instead.
        """

        def on_kazoo_thread(event: WatchedEvent) -> None:
            if event.type != EventType.NONE:
                self._post(self._run_watch, callback, event)

        return on_kazoo_thread

    def one_shot(self) -> tuple[asyncio.Future[WatchedEvent], Callable[[WatchedEvent], None]]:
        """A watcher, and a future its first event resolves on the loop (await it with a bound)."""
        loop = self._loop
        assert loop is not None, "one_shot before start"
        future: asyncio.Future[WatchedEvent] = loop.create_future()

        def resolve(event: WatchedEvent) -> None:
            if not future.done():
                future.set_result(event)

        return future, self.bridge(resolve)

    def _run_watch(self, callback: Callable[[WatchedEvent], None], event: WatchedEvent) -> None:
        if self._closed:
            return
        try:
            callback(event)
        except Exception:  # one bad watcher must not stop the others
            log.exception("ZooKeeper watch callback failed")

    # kazoo threads → loop

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: the node is gone, nobody is listening
            pass

    def _on_kazoo_state(self, state: str) -> None:  # kazoo's connection thread
        client = self._client
        self._post(self._on_state, state, _session_of(client) if client is not None else None)

    def _on_state(self, kazoo_state: str, session_id: int | None) -> None:
        if self._closed:
            return
        if kazoo_state == KazooState.CONNECTED:
            state = ConnState.CONNECTED
            self._kick.set()
        elif kazoo_state == KazooState.SUSPENDED:
            state = ConnState.SUSPENDED
            session_id = None
        else:
            state = ConnState.LOST
            session_id = None
            self._liveness.on_lost()
        self._state = state
        log.info("ZooKeeper connection %s (session %s)", state.value, f"{session_id:#x}" if session_id else "-")
        self._listeners.notify(ConnEvent(state, session_id))

    def _spy_negotiated_timeout(self, client: KazooClient) -> None:
        # kazoo keeps the negotiated timeout in a local variable; a lease must use it, since the
        # server clamps the requested one to [minSessionTimeout, maxSessionTimeout].
        handler = getattr(client, "_connection", None)
        invoke = getattr(handler, "_invoke", None)
        if handler is None or invoke is None:
            log.warning("cannot read the negotiated ZooKeeper session timeout; assuming %g s", self.requested_timeout_s)
            return

        def spying_invoke(timeout: float, request: Any, xid: int | None = None) -> Any:
            result = invoke(timeout, request, xid)
            if isinstance(request, Connect) and isinstance(result, tuple):
                negotiated_ms = getattr(result[0], "time_out", 0)
                if negotiated_ms > 0:
                    self._post(self._on_negotiated, negotiated_ms / 1000)
            return result

        handler._invoke = spying_invoke

    def _on_negotiated(self, timeout_s: float) -> None:
        if timeout_s != self._liveness.timeout_s:
            log.info("ZooKeeper negotiated a session timeout of %g s (asked %g s)", timeout_s, self.requested_timeout_s)
            self._liveness.set_timeout(timeout_s)

    async def _heartbeat(self) -> None:
        while not self._closed:
            try:
                await asyncio.wait_for(self._kick.wait(), self.heartbeat_s)
            except TimeoutError:
                pass
            self._kick.clear()
            if self._state is ConnState.CONNECTED:
                try:
                    await self.call("exists", "/")
                except ZooKeeperUnavailable:
                    log.debug("ZooKeeper heartbeat unanswered")
