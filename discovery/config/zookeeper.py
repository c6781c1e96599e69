"""ZooKeeper configuration store: one znode (``<root>/config``) holding a JSON object.

Every node keeps a data watch on it, so a change reaches every node within a network round
trip; after a reconnect (kazoo drops watches at SUSPENDED) the znode is read and watched
again. Writes are compare-and-set on the znode version, retried on conflict, so
concurrent sets from many nodes never lose one. Keys this version does not declare are
kept in the document (a newer node may use them) but ignored here.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from kazoo.exceptions import BadVersionError, NodeExistsError
from kazoo.protocol.states import EventType, WatchedEvent

from discovery.background import Background
from discovery.config.schema import ConfigSnapshot, Schema, merge
from discovery.config.state import ConfigState, StateBackedStore
from discovery.errors import ConfigConflict, ZooKeeperUnavailable
from discovery.zk import ConnEvent, ConnState, ZkConnection

log = logging.getLogger(__name__)

RELOAD_RETRY_S = 0.5
CAS_ATTEMPTS = 20  # a set retried this often against concurrent writers gives up with ConfigConflict


def _decode(data: bytes) -> dict[str, Any]:
    if not data.strip():
        return {}
    try:
        raw = json.loads(data)
    except ValueError:
        log.error("the config znode is not JSON: every setting keeps its default until it is fixed")
        return {}
    return raw if isinstance(raw, dict) else {}


class ZooKeeperConfigStore(StateBackedStore):
    def __init__(self, conn: ZkConnection, schema: Schema, *, root: str = "/chat") -> None:
        self.schema = schema
        self._conn = conn
        self._path = f"{root}/config"
        self._state = ConfigState(schema)
        # One watcher object: kazoo keeps a set per path, so re-watching never stacks duplicates.
        self._watcher = conn.bridge(self._on_change)
        self._background = Background()  # reloads after watch events and reconnects
        self._unsubscribe: Callable[[], None] | None = None
        self._closed = False

    async def start(self) -> None:
        try:
            await self._conn.call("create", self._path, b"{}", makepath=True)
        except NodeExistsError:
            pass
        self._unsubscribe = self._conn.subscribe(self._on_conn)
        await self._reload()

    async def close(self) -> None:
        self._closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
        await self._background.cancel()

    async def set(self, changes: Mapping[str, object]) -> ConfigSnapshot:
        checked = self.schema.validate(changes)
        for _ in range(CAS_ATTEMPTS):
            data, stat = await self._conn.call("get", self._path)
            document = merge(_decode(data), checked)
            self.schema.check_document(document)  # against what is stored now: refused, nothing written
            try:
                new_stat = await self._conn.call("set", self._path, json.dumps(document, sort_keys=True).encode(), version=stat.version)
            except BadVersionError:
                continue  # someone else wrote in between: merge into theirs
            return self._state.apply(document, new_stat.version)
        raise ConfigConflict(f"the configuration kept changing under {CAS_ATTEMPTS} concurrent writers; try again", retry_after_ms=500)

    async def _reload(self) -> None:
        data, stat = await self._conn.call("get", self._path, watch=self._watcher)
        self._state.apply(_decode(data), stat.version)

    def _on_change(self, event: WatchedEvent) -> None:
        if event.type == EventType.CHANGED:
            self._spawn_reload()

    def _on_conn(self, event: ConnEvent) -> None:
        if event.state is ConnState.CONNECTED:
            self._spawn_reload()  # changes made while we were away, and a fresh watch

    def _spawn_reload(self) -> None:
        if self._closed:
            return
        self._background.spawn(self._guarded_reload())

    async def _guarded_reload(self) -> None:
        while not self._closed:
            try:
                await self._reload()
                return
            except ZooKeeperUnavailable as exc:
                log.warning("config reload failed: %s", exc.message)
            if self._conn.state is not ConnState.CONNECTED:
                return  # the next CONNECTED event reloads
            await asyncio.sleep(RELOAD_RETRY_S)  # connected, but ZooKeeper answered badly: retry
