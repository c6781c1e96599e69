"""This node as its clients and the cluster see it: live sockets, readiness, assignment, draining."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from chat import protocol
from chat.errors import ChatError, CloseCode
from chat.session import Session
from discovery.errors import DiscoveryError
from discovery.node import Discovery
from discovery.registry.base import NodeInfo

log = logging.getLogger(__name__)

#: A readiness check: raises (ideally :class:`ChatError`) when its backend cannot serve.
Check = Callable[[], Awaitable[None]]
# On SIGTERM the reconnect hints are spread over this share of the grace period, so a drain
# is not a thundering herd on the next node; the rest is left for the clients to go.
_SPREAD_SHARE = 0.6
_SPREAD_STEPS = 20


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSettings:
    node_id: str
    drain_grace_s: float = 5.0  # on SIGTERM, how long clients get to leave before the rest are closed
    max_view_age_s: float = 10.0  # not ready once the cluster view is older than this


class Node:
    """Live sockets, readiness and draining of this node; user → node assignment."""

    def __init__(self, *, settings: NodeSettings, discovery: Discovery, checks: dict[str, Check]) -> None:
        self.settings = settings
        self._discovery = discovery
        self._checks = checks
        self.sessions: set[Session] = set()
        self._per_user: dict[str, int] = {}
        self._reporting: asyncio.Task[None] | None = None
        self._report_again = False
        self._emptied = asyncio.Event()  # no socket left (draining waits for it)
        self.draining = False

    # Sockets

    def add(self, session: Session) -> None:
        self.sessions.add(session)
        self._per_user[session.user] = self._per_user.get(session.user, 0) + 1
        self._emptied.clear()
        self._report()

    def discard(self, session: Session) -> None:
        if session not in self.sessions:
            return
        self.sessions.discard(session)
        left = self._per_user[session.user] - 1
        if left:
            self._per_user[session.user] = left
        else:
            del self._per_user[session.user]
        if not self.sessions:
            self._emptied.set()
        self._report()

    def sockets_of(self, user: str) -> int:
        """How many sockets ``user`` has open on this node."""
        return self._per_user.get(user, 0)

    def _report(self) -> None:
        """Tell the registry our load (it rate-limits the writes); one report in flight at a time."""
        if self._reporting is not None and not self._reporting.done():
            self._report_again = True
            return
        self._reporting = asyncio.get_running_loop().create_task(self._report_loop())

    async def _report_loop(self) -> None:
        self._report_again = True
        while self._report_again:
            self._report_again = False
            try:
                await self._discovery.registry.report(len(self.sessions), draining=self.draining)
            except DiscoveryError as exc:  # the registry logs its outages; the next change retries
                log.debug("load report failed: %s", exc.message)
                return

    # Cluster

    def assign(self, user: str) -> NodeInfo:
        """The node ``user`` should connect to (``AssignmentUnavailable`` if none can take them)."""
        return self._discovery.assign(user)

    async def readiness(self) -> dict[str, str]:
        """What cannot serve right now, by name (empty: ready)."""
        failing: dict[str, str] = {}
        for name, check in self._checks.items():
            try:
                await check()
            except ChatError as error:
                failing[name] = error.message
            except Exception as error:  # noqa: BLE001 - readiness reports, never raises
                failing[name] = str(error) or type(error).__name__
        if not self._discovery.lease.valid():
            failing["worker_id"] = "no worker ID lease held: cannot mint message IDs"
        if not self._discovery.registry.view().usable(time.monotonic(), self.settings.max_view_age_s):
            failing["registry"] = "the cluster view is stale (ZooKeeper unreachable)"
        if self.draining:
            failing["node"] = "draining"
        return failing

    # Draining

    async def drain(self) -> None:
        """SIGTERM: stop taking sockets, point each client at another node (the hints spread over
        part of the grace period), give them the grace period to leave, close the rest (1001)."""
        if self.draining:
            return
        self.draining = True
        try:
            await self._discovery.registry.report(len(self.sessions), draining=True)
        except DiscoveryError as exc:  # draining goes on regardless
            log.warning("could not mark this node draining in the registry: %s", exc.message)
        grace = self.settings.drain_grace_s
        sessions = list(self.sessions)
        random.shuffle(sessions)
        others = [n for n in self._discovery.registry.view().nodes if n.node_id != self.settings.node_id and not n.draining]
        log.info("draining: %d sockets, %.1fs grace, %d other node(s) to send them to", len(sessions), grace, len(others))
        started = time.monotonic()
        if others and sessions:
            step = max(1, -(-len(sessions) // _SPREAD_STEPS))
            for i in range(0, len(sessions), step):
                for session in sessions[i : i + step]:
                    self._hint(session)
                await asyncio.sleep(grace * _SPREAD_SHARE / _SPREAD_STEPS)
        remaining = grace - (time.monotonic() - started)
        if others and self.sessions and remaining > 0:
            try:
                await asyncio.wait_for(self._emptied.wait(), remaining)
            except TimeoutError:
                pass
        left = list(self.sessions)
        flush_s = max(1.0, grace - (time.monotonic() - started))
        await asyncio.gather(*(s.flush(flush_s) for s in left))
        await asyncio.gather(*(s.close(CloseCode.GOING_AWAY, "server shutting down") for s in left))

    def _hint(self, session: Session) -> None:
        try:
            target = self._discovery.assign(session.user, avoid=self.settings.node_id)
        except DiscoveryError:
            return  # no other node: the client reconnects through /v1/connect after the close
        if target.node_id != self.settings.node_id:
            session.moving = True  # its close that follows is a move: presence must not flap
            session.push(protocol.frame("reconnect", {"url": target.url, "reason": "draining"}))
