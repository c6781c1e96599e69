"""The composition root: settings + adapters → the node's parts → a Starlette app.

Adapters are chosen by configuration alone, and real ones are imported only when configured,
so the embedded node never loads a driver it does not use. Every part gets what it needs in
its constructor; the lifespan enters the adapters in an AsyncExitStack and leaves them in
reverse order (draining first).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from chat import api, auth, dynamic, startup
from chat.access import Access
from chat.accesslog import AccessLog
from chat.api import ApiSettings, HttpApi
from chat.browser import BrowserGuard, Origins
from chat.channels import ChannelService
from chat.config import Settings
from chat.errors import ChatError, ExitCode
from chat.handlers import Gateway, GatewaySettings
from chat.http import Authenticator
from chat.hub import Hub
from chat.minter import IdMinter
from chat.node import Node, NodeSettings
from chat.notify.notifier import ELECTION as NOTIFIER_ELECTION
from chat.notify.notifier import build_notifier
from chat.operators import Instruments, surface
from chat.protect.guard import Protection
from chat.ratelimit import AddGuard, KeyedLimiter
from chat.relay.base import Relay
from chat.service import MessageLimits, MessageService
from chat.session import SessionLimits
from chat.store.base import MessageStore
from chat.version import node_version
from chat.waiting.base import WaitingRooms
from chat.watchers import PresenceFanout
from chat.ws import WebSocketEndpoint
from discovery.errors import DiscoveryError
from discovery.leader.base import LeaderElection
from discovery.node import Discovery, DiscoverySettings
from presence.store.base import PresenceStore, PresenceUnavailable
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


def build_waiting_rooms(settings: Settings) -> WaitingRooms:
    """Hot rooms' waiting lines: in Redis when configured (a restarted node loses no place), else in memory."""
    if settings.redis_url:
        from chat.waiting.redis import RedisWaitingRooms

        return RedisWaitingRooms(settings.redis_url)
    from chat.waiting.memory import MemoryWaitingRooms

    return MemoryWaitingRooms()


def build_discovery(settings: Settings) -> Discovery:
    """Discovery on ZooKeeper when CHAT_ZOOKEEPER_HOSTS is set, else this node alone (its
    configured worker ID, the floor and lock in the data dir)."""
    zookeeper = bool(settings.zookeeper_hosts)
    return Discovery(
        DiscoverySettings(
            node_id=settings.node_id,
            url=settings.ws_url,
            data_dir=settings.data_dir,
            capacity=settings.capacity,
            worker_id=settings.worker_id,
            zookeeper_hosts=settings.zookeeper_hosts,
            session_timeout_s=settings.zookeeper_session_timeout_s,
            epsilon=settings.assign_epsilon,
            pending_ttl_s=settings.assign_pending_ttl_s,
            version=node_version(),
            # Embedded: a short reservation, so a restart after a crash waits at most ~2 s
            # for the clock to pass it (the minter waits that out instead of refusing).
            reserve_ahead_ms=10_000 if zookeeper else 2_000,
            reserve_refresh_below_ms=5_000 if zookeeper else 1_000,
            max_mint_wait_ms=1_000 if zookeeper else 2_500,
        ),
        dynamic.SCHEMA,
    )


def build_presence_store(settings: Settings) -> PresenceStore:
    timeout_ms = int(settings.presence_timeout_s * 1000)
    if settings.redis_url:
        from presence.store.redis import RedisPresenceStore

        return RedisPresenceStore(settings.redis_url, timeout_ms=timeout_ms)
    from presence.store.memory import MemoryPresenceStore

    return MemoryPresenceStore(timeout_ms=timeout_ms)


@dataclass(frozen=True, slots=True)
class Parts:
    """The node's composed parts (what tests and the server reach for, by name)."""

    node: Node
    hub: Hub
    messages: MessageService
    channels: ChannelService
    gateway: Gateway
    protection: Protection
    metrics: CollectorRegistry  # what /metrics exports


def create_app(
    settings: Settings,
    *,
    store: MessageStore | None = None,
    relay: Relay | None = None,
    discovery: Discovery | None = None,
    presence_store: PresenceStore | None = None,
    waiting: WaitingRooms | None = None,
) -> Starlette:
    """Build the node. Adapters not given are built from ``settings``; all are entered and
    exited by the app's lifespan. ``app.state.parts`` holds the composed :class:`Parts`."""
    store = store or build_store(settings)
    relay = relay or build_relay(settings)
    discovery = discovery or build_discovery(settings)
    presence_store = presence_store or build_presence_store(settings)
    # Hot-room protection first: the store and the relay everyone else uses go through its
    # breakers (real backends only), and the hub and the services consult it.
    protection = Protection(
        node_id=settings.node_id,
        store=store,
        relay=relay,
        lines=waiting or build_waiting_rooms(settings),
        guard_store=bool(settings.cassandra_hosts),
        guard_relay=bool(settings.redis_url),
        wait_s=settings.store_timeout_s,
    )
    store, relay = protection.store, protection.relay
    fanout = PresenceFanout(store=store, relay=relay, fanout_max=settings.presence_fanout_max)
    sweeper: list[LeaderElection] = []  # one sweeper per cluster: elected once discovery is open
    presence = PresenceTracker(
        presence_store,
        heartbeat_s=settings.presence_heartbeat_s,
        fanout_max=settings.presence_fanout_max,
        on_transition=fanout.transition,
        # Hellos and clean closes are written (and their transitions pushed) within 10 ms:
        # watchers on any node see them well inside 50 ms. Heartbeats still batch every 0.5 s.
        prompt_s=0.01,
        is_leader=lambda: bool(sweeper) and sweeper[0].is_leader,
    )
    # The floor: IDs minted from now on sort after anything minted before this start.
    # Mints only under the worker ID the lease holds, above every millisecond it may have used.
    minter = IdMinter(discovery.lease, max_wait_ms=3000)
    access = Access(store)
    hub = Hub(relay, policy=protection.fanout)
    notifier = build_notifier(settings, store=store, presence=presence)  # None: no webhook, nothing enqueued
    messages = MessageService(
        store=store,
        relay=relay,
        minter=minter,
        access=access,
        limits=MessageLimits(
            store_timeout_s=settings.store_timeout_s,
            history_max_bytes=settings.history_max_bytes,
            user_send_per_s=settings.user_send_per_s,
            user_send_burst=settings.user_send_burst,
        ),
        on_stored=notifier.offer if notifier is not None else None,
        guard=protection,
    )
    adds = AddGuard(
        per_adder_rate=settings.add_others_per_min / 60,
        per_adder_burst=settings.add_others_burst,
        per_user_day=settings.added_by_others_per_day,
    )
    channels = ChannelService(
        store=store,
        relay=relay,
        minter=minter,
        access=access,
        group_max_members=settings.group_max_members,
        adds=adds,
        joins=protection.joins,
    )
    node = Node(
        settings=NodeSettings(node_id=settings.node_id, drain_grace_s=settings.drain_grace_s),
        discovery=discovery,
        checks={"store": store.ping, "relay": relay.ping, "presence": presence_store.ping},
    )
    gateway = Gateway(
        messages=messages,
        access=access,
        hub=hub,
        presence=presence,
        settings=GatewaySettings(node_id=settings.node_id, replay_cap=settings.replay_cap),
    )
    authenticator = Authenticator(auth.TokenVerifier(settings), KeyedLimiter(settings.rate_per_s, settings.rate_burst))
    http_api = HttpApi(
        auth=authenticator,
        messages=messages,
        channels=channels,
        presence=presence,
        node=node,
        settings=ApiSettings(
            node_id=settings.node_id,
            max_body_bytes=settings.max_frame_bytes,
            max_message_chars=settings.max_message_chars,
            group_max_members=settings.group_max_members,
        ),
        dev_tokens=(lambda user, roles: auth.issue_token(settings, user, roles=roles, ttl_s=api.DEV_TOKEN_TTL_S)) if settings.dev_login_enabled else None,
    )
    # The operators' surface: the parts count in plain ints (the sockets', the message path's,
    # HTTP errors); /metrics reads them when scraped, the ops API and dashboard read the rest.
    instruments = Instruments()
    operators = surface(
        settings,
        instruments,
        auth=authenticator,
        node=node,
        discovery=discovery,
        messages=messages,
        presence=presence,
        store=store,
        notifier=notifier,
        protection=protection,
    )
    websocket = WebSocketEndpoint(
        auth=authenticator,
        gateway=gateway,
        node=node,
        limits=session_limits(settings),
        handshakes=KeyedLimiter(settings.handshake_per_s, settings.handshake_burst),
        max_sockets_per_user=settings.user_max_sockets,
        counters=instruments.wire,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            # First: the data dir lock (a second node on it is refused before it touches a
            # file) and the worker-ID lease. Last out: the worker ID goes back after every send.
            async with startup.step(*discovery_failure(settings)):
                await discovery.open(register=False)
            stack.push_async_callback(lambda: discovery.close(last_minted_ms=minter.last_minted_ms))
            async with startup.step(*store_failure(settings)):
                await store.open()
            stack.push_async_callback(store.close)
            async with startup.step(*relay_failure(settings)):
                await hub.start()
            stack.push_async_callback(relay.close)
            stack.push_async_callback(messages.close)  # its gap announcer, before the relay closes
            await protection.start(hub, discovery.config)
            stack.push_async_callback(protection.close)  # after the sockets: queued batches are written
            stack.push_async_callback(fanout.close)
            stack.push_async_callback(presence_store.close)
            sweeper.append(await discovery.election("presence-sweeper"))
            await presence.start()
            stack.push_async_callback(presence.close)  # after the sockets: their last events are written
            if notifier is not None:
                await notifier.start(await discovery.election(NOTIFIER_ELECTION))
                stack.push_async_callback(notifier.close)  # after the sockets, before presence and the store
            # Last: only a node that can serve is handed users (the registry closes with discovery).
            async with startup.step(*discovery_failure(settings)):
                await discovery.register()
            stack.push_async_callback(node.drain)  # runs first on the way out
            instruments.lag.start()
            stack.callback(instruments.lag.stop)
            stack.push_async_callback(operators.facts.close)
            log.info("node %s ready at %s (store=%s relay=%s)", settings.node_id, settings.ws_url, type(store).__name__, type(relay).__name__)
            yield

    async def index(request: Request) -> Response:
        return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app = Starlette(
        routes=[
            Route("/", index, methods=["GET"]),
            WebSocketRoute("/v1/ws", websocket.serve),
            *http_api.routes(),
            *operators.routes,
            Mount("/static", StaticFiles(directory=WEB_DIR), name="static"),
        ],
        middleware=[
            Middleware(AccessLog, enabled=settings.access_log),  # outermost: it times and logs every answer
            Middleware(BrowserGuard, origins=Origins(settings.allowed_origins)),
        ],
        exception_handlers={
            ChatError: instruments.counted(api.chat_error_handler),
            DiscoveryError: instruments.counted(api.chat_error_handler),
            PresenceUnavailable: instruments.counted(api.chat_error_handler),
            HTTPException: instruments.counted(api.http_error_handler),
            Exception: instruments.counted(api.internal_error_handler),
        },
        lifespan=lifespan,
    )
    app.state.parts = Parts(node=node, hub=hub, messages=messages, channels=channels, gateway=gateway, protection=protection, metrics=operators.metrics)
    return app


def discovery_failure(settings: Settings) -> tuple[ExitCode, str]:
    """How discovery that cannot start is reported (a data dir in use has a line of its own)."""
    if settings.zookeeper_hosts:
        return ExitCode.ZOOKEEPER, f"cannot join the cluster through ZooKeeper at {settings.zookeeper_hosts} (CHAT_ZOOKEEPER_HOSTS)"
    return ExitCode.DATA_DIR, f"cannot use the data dir {settings.data_dir.resolve()} (CHAT_DATA_DIR)"


def store_failure(settings: Settings) -> tuple[ExitCode, str]:
    """How a store that cannot be opened at start is reported (exit code, what failed)."""
    if settings.cassandra_hosts:
        return ExitCode.CASSANDRA, f"cannot use Cassandra at {','.join(settings.cassandra_hosts)} (CHAT_CASSANDRA_HOSTS)"
    return ExitCode.DATA_DIR, f"cannot open the database in {settings.data_dir.resolve()} (CHAT_DATA_DIR)"


def relay_failure(settings: Settings) -> tuple[ExitCode, str]:
    """How a relay that cannot start is reported (the URL without its password)."""
    if not settings.redis_url:
        return ExitCode.FAILED, "cannot start the in-process relay"
    parts = urlsplit(settings.redis_url)
    shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    return ExitCode.REDIS, f"cannot reach Redis at {shown} (CHAT_REDIS_URL)"


def session_limits(settings: Settings) -> SessionLimits:
    return SessionLimits(
        max_message_chars=settings.max_message_chars,
        queue_frames=settings.send_queue_frames,
        queue_bytes=settings.send_queue_bytes,
        rate_per_s=settings.rate_per_s,
        rate_burst=settings.rate_burst,
        flood_strikes=settings.flood_strikes,
        oversize_strikes=settings.oversize_strikes,
    )
