"""The composition root: settings + adapters → a Starlette app.

Adapters are chosen by configuration alone. Real adapters are imported only when
configured, so the embedded node never loads a driver it does not use.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from chat import api
from chat.auth import TokenVerifier
from chat.config import Settings
from chat.errors import ChatError
from chat.hub import Hub
from chat.ids import IdMinter, SnowflakeGenerator
from chat.ratelimit import KeyedLimiter
from chat.relay.base import Relay
from chat.runtime import Runtime
from chat.service import ChatService
from chat.store.base import MessageStore
from chat.ws import ws_endpoint
from discovery.registry.base import Registry
from presence.store.base import PresenceStore
from presence.tracker import PresenceTracker

log = logging.getLogger(__name__)
WEB_DIR = Path(__file__).parent / "web"


def build_store(settings: Settings) -> MessageStore:
    if settings.cassandra_hosts:
        from chat.store.cassandra import CassandraMessageStore

        return CassandraMessageStore.from_settings(settings)
    from chat.store.sqlite import SqliteMessageStore

    return SqliteMessageStore(settings.data_dir / "chat.sqlite3", timeout_s=settings.store_timeout_s)


def build_relay(settings: Settings) -> Relay:
    if settings.redis_url:
        from chat.relay.redis import RedisRelay

        return RedisRelay(settings.redis_url)
    from chat.relay.local import LocalRelay

    return LocalRelay()


def build_registry(settings: Settings) -> Registry:
    from discovery.registry.static import StaticRegistry

    return StaticRegistry()


def build_presence_store(settings: Settings) -> PresenceStore:
    from presence.store.memory import MemoryPresenceStore

    return MemoryPresenceStore()


def create_app(
    settings: Settings,
    *,
    store: MessageStore | None = None,
    relay: Relay | None = None,
    registry: Registry | None = None,
    presence_store: PresenceStore | None = None,
) -> Starlette:
    """Build the node. Adapters not given are built from ``settings``; all are entered
    and exited by the app's lifespan."""
    store = store or build_store(settings)
    relay = relay or build_relay(settings)
    registry = registry or build_registry(settings)
    presence = PresenceTracker(presence_store or build_presence_store(settings))
    hub = Hub(relay)
    service = ChatService(settings, store, relay, IdMinter(SnowflakeGenerator(settings.worker_id)))
    runtime = Runtime(
        settings=settings,
        store=store,
        relay=relay,
        registry=registry,
        hub=hub,
        service=service,
        presence=presence,
        verifier=TokenVerifier(settings),
        http_limiter=KeyedLimiter(settings.rate_per_s, settings.rate_burst),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            await store.open()
            stack.push_async_callback(store.close)
            await hub.start()
            stack.push_async_callback(relay.close)
            stack.push_async_callback(service.close)  # before the relay closes
            await registry.start(runtime.me())
            stack.push_async_callback(registry.close)
            stack.push_async_callback(runtime.drain)  # runs first on the way out
            log.info("node %s ready at %s (store=%s relay=%s)", settings.node_id, settings.ws_url, type(store).__name__, type(relay).__name__)
            yield

    async def index(request: object) -> Response:
        return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app = Starlette(
        routes=[
            Route("/", index, methods=["GET"]),
            WebSocketRoute("/v1/ws", ws_endpoint),
            *api.routes,
            Mount("/static", StaticFiles(directory=WEB_DIR), name="static"),
        ],
        exception_handlers={
            ChatError: api.chat_error_handler,
            HTTPException: api.http_error_handler,
            Exception: api.internal_error_handler,
        },
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    return app
