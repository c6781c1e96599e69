"""This node as its clients and the cluster see it: live sockets, readiness, assignment, draining."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from chat import protocol
from chat.errors import ChatError, CloseCode
from chat.session import Session
from discovery.assign import assign
from discovery.registry.base import NodeInfo, Registry

log = logging.getLogger(__name__)

#: A readiness check: raises (ideally :class:`ChatError`) when its backend cannot serve.
Check = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSettings:
    node_id: str
    url: str  # the WebSocket URL clients reach this node at (handed out by /v1/connect)
    capacity: int = 10_000  # connections this node is sized for
    drain_grace_s: float = 5.0  # on SIGTERM, how long queued frames get to flush


class Node:
    """Live sockets, readiness and draining of this node; user → node assignment."""

    def __init__(self, *, settings: NodeSettings, registry: Registry, checks: dict[str, Check]) -> None:
        self.settings = settings
        self._registry = registry
        self._checks = checks
        self.sessions: set[Session] = set()
        self._per_user: dict[str, int] = {}
        self.draining = False

    def add(self, session: Session) -> None:
        self.sessions.add(session)
        self._per_user[session.user] = self._per_user.get(session.user, 0) + 1

    def discard(self, session: Session) -> None:
        if session in self.sessions:
            self.sessions.discard(session)
            left = self._per_user[session.user] - 1
            if left:
                self._per_user[session.user] = left
            else:
                del self._per_user[session.user]

    def sockets_of(self, user: str) -> int:
        """How many sockets ``user`` has open on this node."""
        return self._per_user.get(user, 0)

    def me(self) -> NodeInfo:
        s = self.settings
        return NodeInfo(node_id=s.node_id, url=s.url, capacity=s.capacity, connections=len(self.sessions), draining=self.draining)

    async def assign(self, user: str) -> NodeInfo | None:
        """The node ``user`` should connect to (None: no node can take them now)."""
        return assign(user, await self._registry.nodes())

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
        if self.draining:
            failing["node"] = "draining"
        return failing

    async def drain(self) -> None:
        """SIGTERM: refuse new sockets, tell clients where to go, flush, close with 1001."""
        if self.draining:
            return
        self.draining = True
        try:
            await self._registry.report(len(self.sessions), draining=True)
        except Exception:
            log.warning("could not mark this node draining in the registry", exc_info=True)
        sessions = list(self.sessions)
        log.info("draining: closing %d sockets", len(sessions))
        for session in sessions:
            try:
                target = await self.assign(session.user)
            except Exception:  # noqa: BLE001 - no hint then; the client asks /v1/connect
                target = None
            if target is not None and target.node_id != self.settings.node_id:
                session.push(protocol.frame("reconnect", {"url": target.url, "reason": "draining"}))
        grace = self.settings.drain_grace_s
        await asyncio.gather(*(s.flush(grace) for s in sessions))
        await asyncio.gather(*(s.close(CloseCode.GOING_AWAY, "server shutting down") for s in sessions))
