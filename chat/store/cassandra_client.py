"""A Cassandra driver session for the event loop: connect, prepare, and run requests.

Threading: the driver runs its own I/O thread (libev reactor when importable). Connecting,
preparing and schema changes are blocking, so they run in an executor with a bound
(:meth:`CassandraClient.in_thread`). Requests use ``execute_async``; the driver's callbacks
(on its thread) only drop the result into a :class:`~chat.store.bridge.Mailbox` that the loop
drains in batches. A request awaits its future directly: the driver's ``request_timeout`` (on
the execution profile) ends it, and the mailbox's sweeper fails what the driver's timer does
not cover — cassandra-driver 3.x arms its timer once per ``ResponseFuture`` and does not re-arm
it for the following pages of a paged result — at most about 4 × timeout + 5 s after it was
sent. Every driver error or timeout becomes :class:`chat.errors.Unavailable` here, so the store
above never sees a driver exception.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from chat.errors import Unavailable
from chat.store.bridge import Mailbox

if TYPE_CHECKING:
    from cassandra.cluster import Cluster, ResponseFuture, Session
    from cassandra.query import PreparedStatement

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_PORT = 9042

Row = dict[str, Any]


def unavailable(exc: BaseException, what: str) -> Unavailable:
    """Map any driver failure to the port's error; details go to the log, not to clients."""
    from cassandra import OperationTimedOut, Timeout
    from cassandra import Unavailable as NotEnoughReplicas

    if isinstance(exc, (Timeout, OperationTimedOut, TimeoutError)):
        reason, retry_ms = "timed out", 1000
    elif isinstance(exc, NotEnoughReplicas):
        reason, retry_ms = "not enough replicas", 2000
    else:
        reason, retry_ms = "failed", 2000
    log.warning("cassandra %s %s: %s: %s", what, reason, type(exc).__name__, exc)
    return Unavailable(f"message store {reason}", retry_after_ms=retry_ms)


def _is_cas_timeout(exc: BaseException) -> bool:
    from cassandra import WriteTimeout, WriteType

    return isinstance(exc, WriteTimeout) and getattr(exc, "write_type", None) == WriteType.CAS


def parse_hosts(hosts: Iterable[str]) -> list[tuple[str, int]]:
    """``host``, ``host:port`` or ``[v6::addr]:port`` → (host, port) contact points."""
    out = []
    for raw in hosts:
        host = raw.strip()
        port = DEFAULT_PORT
        if host.startswith("["):
            addr, _, rest = host[1:].partition("]")
            host, port = addr, int(rest[1:]) if rest.startswith(":") else DEFAULT_PORT
        elif host.count(":") == 1:
            host, _, p = host.partition(":")
            port = int(p)
        out.append((host, port))
    return out


def _shutdown_when_done(connecting: asyncio.Future[Any]) -> None:
    """A connect that finished after connect() gave up: close what it opened, off the loop."""
    if connecting.cancelled() or connecting.exception() is not None:
        return
    cluster, _ = connecting.result()
    asyncio.get_running_loop().run_in_executor(None, cluster.shutdown)


class CassandraClient:
    """One cluster connection and its prepared statements, used from the event loop."""

    def __init__(
        self,
        hosts: Sequence[str],
        *,
        consistency: str = "LOCAL_QUORUM",
        # Timeouts
        timeout_s: float = 2.0,
        connect_timeout_s: float | None = None,
    ) -> None:
        # (host, port) contact points; the driver discovers the rest of the ring.
        self._contact_points = parse_hosts(hosts)
        # Name of a ConsistencyLevel; the serial level (LWTs) follows it: LOCAL_SERIAL for LOCAL_*.
        self._consistency = consistency.upper()
        # Per request: the driver's request_timeout, so no call waits longer for one answer.
        self.timeout_s = timeout_s
        # TCP connect + handshake per host, and the bound of connect().
        self._connect_timeout_s = connect_timeout_s if connect_timeout_s is not None else max(1.0, timeout_s)
        self._cluster: Cluster | None = None
        self._session: Session | None = None
        self._ps: dict[str, PreparedStatement] = {}
        # Driver → loop hand-off for the loop requests come from; replaced if that changes.
        # Its sweep: an unanswered request fails 2 × timeout + 2.5 to 4 × timeout + 5 s after
        # it was sent, well after the driver's own timeout error, which callers normally see.
        self._mailbox: Mailbox | None = None
        self._sweep_s = 2 * timeout_s + 2.5
        self._closed = False

    # Lifecycle

    async def connect(self) -> None:
        """Connect to the cluster (bounded); raises :class:`Unavailable` if it cannot."""
        loop = asyncio.get_running_loop()
        connecting = loop.run_in_executor(None, self._connect_sync)
        # The connect itself may wait for the connect timeouts, then the schema reads.
        bound = 2 * self._connect_timeout_s + 3 * self.timeout_s + 2
        try:
            self._cluster, self._session = await asyncio.wait_for(asyncio.shield(connecting), bound)
        except (TimeoutError, asyncio.CancelledError) as exc:
            # The thread cannot be interrupted: close what it opens once it is done.
            connecting.add_done_callback(_shutdown_when_done)
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise Unavailable("message store did not connect in time", retry_after_ms=2000) from None
        except Exception as exc:  # noqa: BLE001 - any driver error at connect time
            raise unavailable(exc, "connect") from None

    def _connect_sync(self) -> tuple[Cluster, Session]:
        from cassandra import ConsistencyLevel, ProtocolVersion
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.policies import DCAwareRoundRobinPolicy, ExponentialReconnectionPolicy, TokenAwarePolicy
        from cassandra.query import dict_factory

        consistency = ConsistencyLevel.name_to_value[self._consistency]
        serial = ConsistencyLevel.LOCAL_SERIAL if self._consistency.startswith("LOCAL_") else ConsistencyLevel.SERIAL
        extra: dict[str, Any] = {}
        try:  # the fast reactor, shipped in the wheel; the default one otherwise
            from cassandra.io.libevreactor import LibevConnection

            extra["connection_class"] = LibevConnection
        except ImportError:  # pragma: no cover - depends on the platform's wheel
            log.info("cassandra-driver libev reactor not available; using the default reactor")
        # Native protocol v4, not v5: the driver's v5 framing (checksummed segments) has failed
        # here on large multi-segment responses such as the control connection's schema read
        # ("CRC mismatch on header"), and v5 brings nothing this store uses.
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
            consistency_level=consistency,
            serial_consistency_level=serial,
            request_timeout=self.timeout_s,
            row_factory=dict_factory,
        )
        cluster = Cluster(
            contact_points=self._contact_points,
            protocol_version=ProtocolVersion.V4,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            connect_timeout=self._connect_timeout_s,
            control_connection_timeout=self._connect_timeout_s,
            reconnection_policy=ExponentialReconnectionPolicy(0.5, 30.0),
            **extra,
        )
        try:
            return cluster, cluster.connect()
        except BaseException:
            cluster.shutdown()
            raise

    async def prepare(self, statements: Mapping[str, tuple[str, bool]]) -> None:
        """Prepare ``{name: (cql, is_idempotent)}`` for :meth:`execute`, :meth:`cas` and :meth:`batch`."""

        def run(cluster: Cluster, session: Session) -> None:
            for name, (cql, idempotent) in statements.items():
                ps = session.prepare(cql)
                ps.is_idempotent = idempotent
                self._ps[name] = ps

        await self.in_thread(run, 10 * self.timeout_s + 10, "prepare")

    async def in_thread(self, fn: Callable[[Cluster, Session], T], bound: float, what: str) -> T:
        """Run blocking driver work (``fn(cluster, session)``) in an executor, at most ``bound`` seconds."""
        cluster, session = self._cluster, self._session
        if cluster is None or session is None or self._closed:
            raise Unavailable("message store is not connected", retry_after_ms=1000)
        try:
            return await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, fn, cluster, session), bound)
        except TimeoutError:
            raise Unavailable(f"message store {what} timed out", retry_after_ms=2000) from None
        except Unavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - any driver error
            raise unavailable(exc, what) from None

    async def close(self) -> None:
        """Shut the cluster connection down (bounded, best effort); idempotent."""
        if self._closed:
            return
        self._closed = True
        cluster, self._cluster, self._session = self._cluster, None, None
        if cluster is not None:
            try:
                await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, cluster.shutdown), 30)
            except Exception:
                log.warning("cassandra cluster shutdown did not finish cleanly", exc_info=True)

    # Requests

    async def execute(self, name: str, params: Sequence[Any], *, what: str | None = None) -> list[Row]:
        """Every row of the prepared statement ``name``; any failure raises :class:`Unavailable`."""
        return await self._run(self._ps.get(name), params, what or name)

    async def cas(self, name: str, params: Sequence[Any]) -> Row:
        """One LWT, retried once after a CAS timeout (outcome unknown). Callers recognise their
        own earlier success in the returned row (their IDs are unique), so the retry is safe."""
        for attempt in (1, 2):
            try:
                return (await self._request(self._ps.get(name), params))[0]
            except Unavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - the driver's error
                if attempt == 1 and _is_cas_timeout(exc):
                    log.info("cassandra %s: CAS timeout (contention?), retrying once", name)
                    continue
                raise unavailable(exc, name) from None
        raise AssertionError("unreachable")

    async def batch(self, kind: str, items: Iterable[tuple[str, Sequence[Any]]], what: str) -> None:
        """A ``"logged"`` or ``"unlogged"`` batch of plain writes, marked idempotent: the driver
        stamps one client timestamp per request, so a retried batch cannot undo a later write."""
        from cassandra.query import BatchStatement, BatchType

        batch = BatchStatement(batch_type=BatchType.LOGGED if kind == "logged" else BatchType.UNLOGGED)
        for name, params in items:
            batch.add(self._ps[name], params)
        batch.is_idempotent = True
        await self._run(batch, None, what)

    async def _run(self, statement: Any, params: Sequence[Any] | None, what: str) -> list[Row]:
        try:
            return await self._request(statement, params)
        except Unavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - the driver's error
            raise unavailable(exc, what) from None

    async def _request(self, statement: Any, params: Sequence[Any] | None) -> list[Row]:
        """Execute on the driver's thread, resolve on the loop; every page of the result is read.

        Raises the driver's exception as is (callers map it), or Unavailable if not open."""
        session = self._session
        if session is None or statement is None or self._closed:
            raise Unavailable("message store is not open", retry_after_ms=1000)
        loop = asyncio.get_running_loop()
        mailbox = self._mailbox
        if mailbox is None or mailbox.loop is not loop:
            mailbox = self._mailbox = Mailbox(loop, name="cassandra", sweep_s=self._sweep_s)
        future: asyncio.Future[list[Row]] = loop.create_future()
        rows: list[Row] = []
        # Uses the execution profile's request_timeout: the driver fails the request itself.
        response: ResponseFuture = session.execute_async(statement, params)
        # Tracked only once the request is really out (execute_async may raise).
        mailbox.track(future)
        put = mailbox.put

        # Both run on the driver's I/O thread: no blocking, no raising, only hand-off.
        def on_page(page: list[Row] | None) -> None:
            try:
                if page:
                    rows.extend(page)
                if response.has_more_pages:
                    response.start_fetching_next_page()
                    return
            except Exception as exc:  # noqa: BLE001 - never raise on the driver's thread
                put(future, None, exc)
                return
            put(future, rows, None)

        def on_error(exc: BaseException) -> None:
            put(future, None, exc)

        response.add_callbacks(on_page, on_error)
        # No wait_for: the driver's timeout or the mailbox's sweeper resolves this future.
        # A cancelled caller cancels the future; a late answer is then dropped.
        return await future
