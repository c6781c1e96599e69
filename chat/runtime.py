"""The node's live parts, built once by the composition root and shared by the endpoints."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from chat import protocol
from chat.auth import TokenVerifier
from chat.config import Settings
from chat.errors import CLOSE_GOING_AWAY
from chat.hub import Hub
from chat.ratelimit import KeyedLimiter
from chat.relay.base import Relay
from chat.service import ChatService
from chat.session import Session
from chat.store.base import MessageStore
from discovery.assign import assign
from discovery.registry.base import NodeInfo, Registry
from presence.tracker import PresenceTracker

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    store: MessageStore
    relay: Relay
    registry: Registry
    hub: Hub
    service: ChatService
    presence: PresenceTracker
    verifier: TokenVerifier
    http_limiter: KeyedLimiter
    sessions: set[Session] = field(default_factory=set)
    draining: bool = False
    started_at: float = field(default_factory=time.time)

    def me(self) -> NodeInfo:
        return NodeInfo(
            node_id=self.settings.node_id,
            url=self.settings.ws_url,
            capacity=10_000,
            connections=len(self.sessions),
            draining=self.draining,
        )

    async def assign(self, user: str) -> NodeInfo | None:
        return assign(user, await self.registry.nodes())

    async def drain(self) -> None:
        """SIGTERM: refuse new sockets, tell clients where to go, close with 1001, flush."""
        if self.draining:
            return
        self.draining = True
        try:
            await self.registry.report(len(self.sessions), draining=True)
        except Exception:  # noqa: BLE001 - draining goes on regardless
            log.warning("could not mark this node draining in the registry", exc_info=True)
        sessions = list(self.sessions)
        log.info("draining: closing %d sockets", len(sessions))
        for session in sessions:
            target = None
            try:
                target = await self.assign(session.user)
            except Exception:  # noqa: BLE001
                pass
            if target is not None and target.node_id != self.settings.node_id:
                session.push(protocol.encode_text("reconnect", {"url": target.url, "reason": "draining"}))
        grace = self.settings.drain_grace_s
        await asyncio.gather(*(s.flush(grace) for s in sessions))
        await asyncio.gather(*(s.close(CLOSE_GOING_AWAY, "server shutting down") for s in sessions))
