"""ZooKeeper registry: each node an ephemeral ``<root>/nodes/<node_id>`` znode of JSON
``{node_id, url, capacity, connections, draining, started_at_ms, version}``; every node keeps a
watched copy of all of them.

Connection states:
- CONNECTED: the copy is live (children watch on the directory, a data watch per node).
- SUSPENDED: kazoo drops every watch; the view is marked stale since the last answered
  request (``RegistryView.stale_since``). Sockets keep being served; callers stop
  assigning once the view is older than their bound.
- CONNECTED again: everything is read and watched again, then the view is live.
- LOST: our znode went with the session; on the next session we register again (with
  the latest load and draining flag), then re-read everything.

A node restarted faster than its old session expires finds its old znode still there:
:meth:`start` waits (bounded by the session timeout) for it to vanish instead of
deleting what may be a live twin with the same node ID.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

from kazoo.exceptions import NodeExistsError, NoNodeError
from kazoo.protocol.states import EventType, WatchedEvent

from discovery.background import Background
from discovery.errors import DiscoveryError, ZooKeeperUnavailable
from discovery.listeners import Listeners
from discovery.registry.base import NodeInfo, RegistryView
from discovery.registry.throttle import Load, ReportThrottle
from discovery.zk import ConnEvent, ConnState, ZkConnection

log = logging.getLogger(__name__)

REPAIR_RETRY_S = 0.5  # between attempts to re-register / re-read while ZooKeeper answers with errors
MAX_TOMBSTONES = 10_000  # names of deleted znodes remembered to ignore late answers about them


def encode_node(node: NodeInfo) -> bytes:
    fields = {"node_id": node.node_id, "url": node.url, "capacity": node.capacity, "connections": node.connections}
    return json.dumps({**fields, "draining": node.draining, "started_at_ms": node.started_at_ms, "version": node.version}).encode()


def decode_node(data: bytes, name: str) -> NodeInfo:
    """Parse a node znode; raises ValueError (a node we cannot read is left out of the view)."""
    raw = json.loads(data)
    if not isinstance(raw, dict) or raw.get("node_id") != name:
        raise ValueError("not a node record for this name")
    url, draining = raw.get("url"), raw.get("draining", False)
    version = raw.get("version", "")  # absent in records of nodes older than the field
    ints = [raw.get(k, 0) for k in ("capacity", "connections", "started_at_ms")]
    if not isinstance(url, str) or not isinstance(draining, bool) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints):
        raise ValueError("bad field types")
    if not isinstance(version, str) or len(version) > 64:
        raise ValueError("bad version")
    return NodeInfo(name, url, ints[0], ints[1], draining, ints[2], version)


class ZooKeeperRegistry:
    def __init__(self, conn: ZkConnection, *, root: str = "/chat", report_interval_s: float = 1.0) -> None:
        self._conn = conn
        self._dir = f"{root}/nodes"
        self._interval_s = report_interval_s
        self._me: NodeInfo | None = None
        self._throttle = ReportThrottle(report_interval_s, Load(0, False))
        self._registered_on: int | None = None  # the session owning our znode
        self._known: dict[str, tuple[NodeInfo, int, int]] = {}  # name → (node, czxid, mzxid)
        self._tombstones: dict[str, int] = {}  # name → czxid of the incarnation seen deleted
        self._version = 0
        self._stale_since: float | None = None
        self._view_cache: RegistryView | None = None
        self._listeners: Listeners[RegistryView] = Listeners("registry")
        # One watcher object each: kazoo keeps a set per path, so re-watching never stacks duplicates.
        self._children_watcher = conn.bridge(self._on_children)
        self._data_watcher = conn.bridge(self._on_data)
        self._background = Background()  # re-reads after watch events
        self._flusher: asyncio.Task[None] | None = None
        self._repair: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._closed = False

    # The port

    async def start(self, me: NodeInfo) -> None:
        self._me = me
        self._throttle = ReportThrottle(self._interval_s, Load(me.connections, me.draining))
        self._unsubscribe = self._conn.subscribe(self._on_conn)
        await self._conn.call("ensure_path", self._dir)
        await self._register()
        await self._resync(refetch_all=True)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
        await self._background.cancel()
        tasks = [t for t in (self._flusher, self._repair) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        me, session = self._me, self._registered_on
        if me is not None and session is not None and session == self._conn.session_id:
            try:
                await self._conn.call("delete", self._path(me.node_id))
            except (ZooKeeperUnavailable, NoNodeError):
                pass  # it goes with the session anyway
        self._registered_on = None
        self._known.clear()
        self._changed()

    async def report(self, connections: int, *, draining: bool | None = None) -> None:
        if self._me is None or self._closed:
            return
        wanted = self._throttle.wanted
        load = Load(connections, wanted.draining if draining is None else draining)
        delay = self._throttle.offer(load, time.monotonic())
        if delay is None:
            return
        if load.draining != self._throttle.written.draining:
            await self._write()  # at once, and visible in our own view when we return
        elif self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush(), name="registry-flush")

    def view(self) -> RegistryView:
        view = self._view_cache
        if view is None:
            nodes = tuple(sorted((entry[0] for entry in self._known.values()), key=lambda n: n.node_id))
            view = self._view_cache = RegistryView(nodes, self._version, self._stale_since)
        return view

    async def nodes(self) -> list[NodeInfo]:
        return list(self.view().nodes)

    def subscribe(self, callback: Callable[[RegistryView], None]) -> Callable[[], None]:
        return self._listeners.add(callback)

    # Registration and load writes

    def _path(self, name: str) -> str:
        return f"{self._dir}/{name}"

    def _current(self) -> NodeInfo:
        assert self._me is not None
        wanted = self._throttle.wanted
        return replace(self._me, connections=wanted.connections, draining=wanted.draining)

    async def _register(self) -> None:
        """Create our ephemeral znode; wait (bounded) for a leftover of an earlier session to vanish."""
        node = self._current()
        path = self._path(node.node_id)
        deadline = time.monotonic() + self._conn.session_timeout_s + 2
        while True:
            try:
                _, session = await self._conn.call_on_session("create", path, encode_node(node), ephemeral=True)
                if session is not None:
                    self._registered(node, session)
                    return
            except NodeExistsError:
                pass
            vanished, watcher = self._conn.one_shot()
            stat, session = await self._conn.call_on_session("exists", path, watch=watcher)
            if stat is None:
                continue
            if session is not None and stat.ephemeralOwner == session:  # ours, from a create we stopped waiting for
                await self._conn.call("set", path, encode_node(node))
                self._registered(node, session)
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DiscoveryError(f"node id {node.node_id} is registered by another live ZooKeeper session (two nodes with one CHAT_NODE_ID?)")
            log.info("waiting up to %.1f s for the registration of an earlier %s to expire", remaining, node.node_id)
            try:
                await asyncio.wait_for(vanished, remaining)
            except TimeoutError:
                pass

    def _registered(self, node: NodeInfo, session: int) -> None:
        self._registered_on = session
        self._throttle.done(Load(node.connections, node.draining), time.monotonic())
        self._me = node

    async def _write(self) -> None:
        if self._registered_on is None:
            return  # the repair registers with the latest values
        node = self._current()
        try:
            stat = await self._conn.call("set", self._path(node.node_id), encode_node(node))
        except NoNodeError:
            self._registered_on = None
            self._start_repair()
            return
        self._throttle.done(Load(node.connections, node.draining), time.monotonic())
        self._me = node
        self._learn(node.node_id, node, stat.czxid, stat.mzxid)

    async def _flush(self) -> None:
        while (delay := self._throttle.due(time.monotonic())) is not None:
            if delay > 0:
                await asyncio.sleep(delay)  # the rate limit itself
            try:
                await self._write()
            except ZooKeeperUnavailable:
                return  # the next CONNECTED event flushes again
            if self._registered_on is None:
                return

    # The watched copy

    async def _resync(self, *, refetch_all: bool) -> None:
        names = await self._conn.call("get_children", self._dir, watch=self._children_watcher)
        present = set(names)
        for gone in set(self._known) - present:
            self._forget(gone)
        wanted = present if refetch_all else present - set(self._known)
        await asyncio.gather(*(self._fetch(name) for name in wanted))
        me = self._me
        if me is not None and me.node_id not in present and self._registered_on is not None:
            self._registered_on = None  # someone deleted it: register again
            self._start_repair()

    async def _fetch(self, name: str) -> None:
        try:
            data, stat = await self._conn.call("get", self._path(name), watch=self._data_watcher)
        except NoNodeError:
            self._forget(name)
            return
        if stat.czxid <= self._tombstones.get(name, -1):
            return  # an answer about an incarnation already seen deleted
        try:
            node = decode_node(data, name)
        except ValueError as exc:
            log.warning("registry entry %s ignored: %s", name, exc)
            return
        self._learn(name, node, stat.czxid, stat.mzxid)

    def _learn(self, name: str, node: NodeInfo, czxid: int, mzxid: int) -> None:
        known = self._known.get(name)
        if known is not None and (known[1], known[2]) >= (czxid, mzxid):
            return  # we already hold this version or a newer one
        self._known[name] = (node, czxid, mzxid)
        if known is None or known[0] != node:
            self._changed()

    def _forget(self, name: str) -> None:
        known = self._known.pop(name, None)
        if known is None:
            return
        self._tombstones.pop(name, None)
        self._tombstones[name] = known[1]
        if len(self._tombstones) > MAX_TOMBSTONES:
            del self._tombstones[next(iter(self._tombstones))]
        self._changed()

    def _changed(self) -> None:
        self._version += 1
        self._view_cache = None
        if self._listeners:  # building a view costs a sort: only when someone listens
            self._listeners.notify(self.view())

    def _on_children(self, event: WatchedEvent) -> None:
        if not self._closed:
            self._background.spawn(self._guarded(lambda: self._resync(refetch_all=False)))

    def _on_data(self, event: WatchedEvent) -> None:
        if self._closed:
            return
        name = event.path.rsplit("/", 1)[-1]
        if event.type == EventType.DELETED:
            self._forget(name)
            if self._me is not None and name == self._me.node_id and self._registered_on is not None:
                self._registered_on = None
                self._start_repair()
        else:
            self._background.spawn(self._guarded(lambda: self._fetch(name)))

    async def _guarded(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        # Takes a factory, not a coroutine: a task cancelled before it starts (at close) then
        # leaves no coroutine that was never awaited.
        try:
            await work()
        except ZooKeeperUnavailable:
            self._start_repair()  # re-read everything once ZooKeeper answers again

    # Connection states

    def _on_conn(self, event: ConnEvent) -> None:
        if self._closed:
            return
        if event.state is ConnState.CONNECTED:
            self._start_repair()
            return
        if self._stale_since is None:
            self._stale_since = self._conn.last_good
            self._changed()
        if event.state is ConnState.LOST:
            self._registered_on = None

    def _start_repair(self) -> None:
        if not self._closed and self._me is not None and (self._repair is None or self._repair.done()):
            self._repair = asyncio.get_running_loop().create_task(self._repair_loop(), name="registry-repair")

    async def _repair_loop(self) -> None:
        """Register again if needed, re-read and re-watch everything, then flush the load."""
        while not self._closed and self._conn.state is ConnState.CONNECTED:
            try:
                if self._registered_on is None or self._registered_on != self._conn.session_id:
                    await self._register()
                await self._resync(refetch_all=True)
            except (ZooKeeperUnavailable, DiscoveryError) as exc:
                log.warning("registry repair: %s", exc.message)
                await asyncio.sleep(REPAIR_RETRY_S)  # ZooKeeper answers, but with errors: retry
                continue
            if self._stale_since is not None and self._conn.state is ConnState.CONNECTED:
                self._stale_since = None
                self._changed()
            if self._throttle.due(time.monotonic()) is not None and (self._flusher is None or self._flusher.done()):
                self._flusher = asyncio.get_running_loop().create_task(self._flush(), name="registry-flush")
            return
