"""The operators' surface, composed: counters, ``/metrics``, the ops API and dashboard.

The composition root (chat/app.py) creates :class:`Instruments` first — the plain counters the
WebSocket endpoint and the error handlers bump — and, once the node's parts exist,
:func:`surface` wires the collector, the ops read model and their routes onto those parts.
Nothing here runs on the hot path: it only connects what counts to what reads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from chat.config import Settings
from chat.errors import translate
from chat.http import Authenticator
from chat.metrics.collector import Sources, registry
from chat.metrics.counters import HttpCounters, WireCounters
from chat.metrics.endpoint import MetricsEndpoint
from chat.metrics.looplag import LoopLag
from chat.node import Node
from chat.notify.notifier import Notifier
from chat.ops_api import OpsApi
from chat.ops_rooms import ProtectionOps, RoomFacts
from chat.ops_view import OpsSources, OpsView
from chat.protect.guard import Protection
from chat.service import MessageService
from chat.store.base import MessageStore
from chat.version import node_version
from discovery.node import Discovery
from presence.tracker import PresenceTracker

ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Instruments:
    """The counters the parts bump as they work (created before the parts that get them)."""

    wire: WireCounters = field(default_factory=WireCounters)  # the sockets' (chat.ws, chat.session)
    http: HttpCounters = field(default_factory=HttpCounters)  # HTTP error responses, by code
    lag: LoopLag = field(default_factory=LoopLag)  # started by the app's lifespan

    def counted(self, handler: ErrorHandler) -> ErrorHandler:
        """``handler``, counting each error response by its protocol code."""
        http = self.http

        async def handle(request: Request, exc: Exception) -> Response:
            response = await handler(request, exc)
            http.count(_http_code(exc.status_code) if isinstance(exc, HTTPException) else translate(exc).code)
            return response

        return handle


@dataclass(frozen=True, slots=True)
class Surface:
    routes: list[BaseRoute]  # /metrics, /ops and /v1/ops/*
    metrics: CollectorRegistry  # what /metrics exports
    facts: RoomFacts  # hot rooms' member and online counts (closed with the app)


def surface(
    settings: Settings,
    instruments: Instruments,
    *,
    auth: Authenticator,
    node: Node,
    discovery: Discovery,
    messages: MessageService,
    presence: PresenceTracker,
    store: MessageStore,
    notifier: Notifier | None,
    protection: Protection,
) -> Surface:
    """Wire the collector, the ops read model and their routes onto the node's parts."""
    version = node_version()
    rooms = ProtectionOps(protection)
    facts = RoomFacts(
        count_members=store.count_members,
        list_members=lambda room, limit: store.list_members(room, limit=limit),
        count_online=lambda users: _online(presence, users),
    )
    metrics = registry(
        Sources(
            node_id=settings.node_id,
            version=version,
            capacity=settings.capacity,
            node=node,
            view=discovery.registry.view,
            wire=instruments.wire,
            messages=messages.counters,
            gaps_owed=lambda: messages.gaps_owed,
            gaps_announced=lambda: messages.gaps_announced,
            http=instruments.http,
            presence=presence.stats,
            lag=instruments.lag,
            notifier=notifier,
            rooms=rooms,
        )
    )
    view = OpsView(
        OpsSources(
            node_id=settings.node_id,
            node=node,
            view=discovery.registry.view,
            config=discovery.config,
            wire=instruments.wire,
            messages=messages.counters,
            lag=instruments.lag,
            rooms=rooms,
            facts=facts,
        )
    )
    # Development trusts a request from this machine with /metrics; production never decides by address.
    scrape = MetricsEndpoint(registry=metrics, auth=auth, token=settings.metrics_token, trust_loopback=settings.environment != "production")
    ops = OpsApi(auth=auth, config=discovery.config, view=view, channel=store.get_channel)
    return Surface(routes=[*ops.routes(), *scrape.routes()], metrics=metrics, facts=facts)


async def _online(presence: PresenceTracker, users: list[str]) -> int:
    return (await presence.online_among(users, 0)).count


def _http_code(status: int) -> str:
    """The protocol code of an HTTP error Starlette raised itself (routing, methods)."""
    return {401: "unauthorized", 403: "forbidden", 404: "not_found"}.get(status, "bad_request")
