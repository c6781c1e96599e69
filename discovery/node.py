"""One node's discovery parts, built from plain settings and started and stopped in the right order.

The composition root (chat's ``app.py``) builds one :class:`Discovery` per process. With
``zookeeper_hosts`` empty everything is embedded (static registry and lease, in-process
config persisted in the data dir, static elections); otherwise one ZooKeeper session
carries all of it. Either way the data dir is locked: a second process on it is refused
at start with :class:`~discovery.errors.DataDirInUse`.

Start order: the data-dir lock, the ZooKeeper session, the worker-ID lease (a node that
cannot mint must not receive users), the configuration, and last the registry (the node
becomes assignable). :meth:`Discovery.close` goes the other way; pass the last
millisecond minted so the next holder of the worker ID can start right after it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from discovery.assign import Assigner
from discovery.config.base import ConfigStore
from discovery.config.memory import InProcessConfigStore
from discovery.config.schema import Schema
from discovery.config.zookeeper import ZooKeeperConfigStore
from discovery.datadir import DataDirLock
from discovery.leader.base import LeaderElection
from discovery.leader.static import StaticElection
from discovery.leader.zookeeper import ZooKeeperElection
from discovery.lease.base import WorkerLease
from discovery.lease.mint import ReservePolicy
from discovery.lease.static import StaticWorkerLease
from discovery.lease.zookeeper import ZooKeeperWorkerLease
from discovery.registry.base import NodeInfo, Registry
from discovery.registry.static import StaticRegistry
from discovery.registry.zookeeper import ZooKeeperRegistry
from discovery.zk import ZkConnection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiscoverySettings:
    """Everything discovery needs; chat maps its ``CHAT_*`` settings onto these."""

    node_id: str
    url: str  # the WebSocket URL clients reach this node at (…/v1/ws)
    data_dir: Path
    capacity: int = 10_000  # connections this node is sized for; it is never assigned more
    version: str = ""  # the node's software version, shown in the registry to operators
    worker_id: int = 0  # embedded mode only: ZooKeeper leases one
    zookeeper_hosts: str = ""  # "host:port,…[/chroot]"; empty: embedded
    root: str = "/chat"  # znode under the chroot that holds nodes, workers, config, elections
    # Timeouts
    session_timeout_s: float = 10.0  # ZooKeeper session: how fast a dead node vanishes
    connect_timeout_s: float = 5.0  # ZooKeeper must accept a session within this at start
    op_timeout_s: float = 5.0  # one ZooKeeper call
    # Load reports and assignment
    report_interval_s: float = 1.0  # at most one load write per node per interval
    epsilon: float = 0.25  # no node gets more than (1 + epsilon) × its capacity share of the load
    pending_ttl_s: float = 5.0  # an assignment counts toward its node until reported, or this long
    max_view_age_s: float = 10.0  # stop assigning from a registry view older than this
    # Minting reservations
    reserve_ahead_ms: int = 10_000
    reserve_refresh_below_ms: int = 5_000
    max_mint_wait_ms: int = 1000  # a clock just behind the floor is waited out up to this


class Discovery:
    """The started parts of one node; build with :meth:`start`."""

    def __init__(self, settings: DiscoverySettings, schema: Schema) -> None:
        self.settings = settings
        self.conn: ZkConnection | None = None
        self.assigner = Assigner(epsilon=settings.epsilon, pending_ttl_s=settings.pending_ttl_s, max_stale_s=settings.max_view_age_s)
        policy = ReservePolicy(settings.reserve_ahead_ms, settings.reserve_refresh_below_ms)
        self._lock: DataDirLock | None = None
        self._elections: list[LeaderElection] = []
        self.lease: WorkerLease
        self.config: ConfigStore
        self.registry: Registry
        if settings.zookeeper_hosts:
            conn = self.conn = ZkConnection(
                settings.zookeeper_hosts,
                session_timeout_s=settings.session_timeout_s,
                connect_timeout_s=settings.connect_timeout_s,
                op_timeout_s=settings.op_timeout_s,
            )
            self.lease = ZooKeeperWorkerLease(conn, settings.node_id, root=settings.root, policy=policy, max_wait_ms=settings.max_mint_wait_ms)
            self.config = ZooKeeperConfigStore(conn, schema, root=settings.root)
            self.registry = ZooKeeperRegistry(conn, root=settings.root, report_interval_s=settings.report_interval_s)
        else:
            self.lease = StaticWorkerLease(settings.data_dir, settings.worker_id, holder=settings.node_id, policy=policy, max_wait_ms=settings.max_mint_wait_ms)
            self.config = InProcessConfigStore(schema, settings.data_dir / "config.json")
            self.registry = StaticRegistry()

    @classmethod
    async def start(cls, settings: DiscoverySettings, schema: Schema) -> Discovery:
        """Start everything (bounded); on failure what was started is closed again."""
        node = cls(settings, schema)
        await node.open()
        return node

    async def open(self, *, register: bool = True) -> None:
        """Start everything (bounded); on failure what was started is closed again.

        ``register=False`` leaves the node out of the registry (not assignable) until
        :meth:`register`: a node that still has to open its store must not be handed users."""
        try:
            await self._open()
            if register:
                await self.register()
        except BaseException:
            await self.close()
            raise

    async def _open(self) -> None:
        s = self.settings
        if self.conn is not None:
            self._lock = await asyncio.to_thread(DataDirLock.acquire, s.data_dir)  # the static lease takes it itself
            await self.conn.start()
        worker_id = await self.lease.acquire()
        await self.config.start()
        log.info("discovery open: node %s, worker %d, %s", s.node_id, worker_id, "ZooKeeper " + s.zookeeper_hosts if self.conn else "embedded")

    async def register(self) -> None:
        """Join the registry: from now on the node is assigned users (bounded)."""
        s = self.settings
        await self.registry.start(NodeInfo(s.node_id, s.url, s.capacity, 0, False, time.time_ns() // 1_000_000, s.version))

    async def election(self, name: str) -> LeaderElection:
        """Join the election ``name`` (e.g. "presence-sweeper"); it is closed with the node."""
        election: LeaderElection = (
            StaticElection() if self.conn is None else ZooKeeperElection(self.conn, name, identifier=self.settings.node_id, root=self.settings.root)
        )
        self._elections.append(election)
        await election.start()
        return election

    def assign(self, user: str, *, avoid: str | None = None) -> NodeInfo:
        """The node for ``user`` from the local view (no I/O); AssignmentUnavailable if none can take them."""
        return self.assigner.assign(user, self.registry.view(), time.monotonic(), avoid=avoid)

    async def close(self, *, last_minted_ms: int | None = None) -> None:
        """Leave the cluster, then give the worker ID back; idempotent."""
        await self.registry.close()
        for election in self._elections:
            await election.close()
        await self.config.close()
        await self.lease.close(last_minted_ms=last_minted_ms)
        if self.conn is not None:
            await self.conn.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None
