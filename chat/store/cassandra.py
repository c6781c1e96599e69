"""Cassandra MessageStore: the clustered store (``cassandra-driver``, prepared statements, token-aware).

Schema (versioned CQL in ``chat/store/migrations/``, applied by :func:`migrate`)::

    channels            (channel_id)                        the channel; written last on create
    members_by_channel  ((channel_id), user_id)             members in user order
    channels_by_user    ((user_id), channel_id DESC)        the user's channels, fields copied in
    dm_pairs            (dm_key)                            LWT claim: one DM per pair
    messages            ((channel_id, bucket), message_id DESC)
    channel_buckets     ((channel_id), bucket DESC)         the channel's non-empty buckets
    message_keys        ((channel_id, sender, client_msg_id))  LWT claim: idempotency, holds the message
    read_positions      ((user_id), channel_id)             written USING TIMESTAMP = message ID

Decisions:

* **Buckets.** ``bucket = (timestamp_ms(id) - EPOCH_MS) // BUCKET_SPAN_MS`` with a fixed span of
  10 days: a busy channel (10k messages a day) stays near 100k rows per partition, a quiet one
  reads its newest page from one partition. History first lists the channel's non-empty buckets
  (one small partition) and then reads only those, newest (or oldest) first, with 1, 2, 4 … 8
  buckets in flight: it never scans empty time ranges and stops at the channel's first bucket.
  The span is part of the data layout: changing it needs a data migration. A room hotter than
  ~1M messages a day needs finer buckets (a per-channel span stored on the channel) — not done.
* **Idempotency** (``message_keys``). ``INSERT … IF NOT EXISTS`` claims the key *before* the
  message row is written, and the claim row holds the whole message (ID and text). The claimer
  then writes the bucket index and the message (plain idempotent writes) and reports
  ``created=True``. Any other call with the key gets the claim back from the LWT itself (no
  extra read), re-writes the message row from it (same ID, same text: a no-op if it is there,
  the repair if the claimer crashed between claim and insert) and reports ``created=False``. So
  concurrent retries store exactly one message, and a retry always ends with it stored. Claims
  expire after :data:`IDEMPOTENCY_TTL_S` (a retry later than that stores a new message).
  Caveat: if the claimer crashed after claiming, no call reports ``created=True``, so the
  message path does not publish it live; it reaches subscribers from the store (resync/history).
* **DMs** (``dm_pairs``): the same claim pattern; the claim holds the channel and both members,
  a loser returns the winner's channel and re-writes it if its channel row is missing.
* **Read positions** are written ``USING TIMESTAMP <message_id>``: Cassandra's last-write-wins
  then keeps the largest ID, so the position never moves back whatever the order of concurrent
  writes from several devices — no LWT, no read-compare-write race. ``set_read`` reads the
  position back to return it. (A ``maximum_timestamp`` guardrail, off by default, would refuse
  these writes: IDs are larger than microsecond clocks.)
* **Member limit**: ``add_member`` with ``max_members`` holds a per-channel :class:`asyncio.Lock`
  in this adapter around count-then-insert. That makes concurrent adds on **one node** exact
  (the port's contract); adds racing on two nodes can overshoot by the number of racing nodes.
* **Idempotent marking**: the driver stamps a client timestamp once per request, so a retried
  plain write carries its original timestamp and cannot undo a later write. Plain writes
  (upserts, deletes, logged batches of them), reads, and the message insert keyed by its
  Snowflake ID are marked ``is_idempotent``; LWTs never are (we retry those ourselves, once,
  after a CAS timeout, recognising our own claim by its ID).
* **Batches**: unlogged only within one partition (a channel's member rows); the two
  directions of a membership change go in one small *logged* batch so they cannot diverge.

Threading: the driver runs its own I/O thread (libev reactor when importable). Connecting,
migrating and preparing are blocking, so :meth:`open` runs them in an executor with a bound.
Requests use ``execute_async``; the driver's callbacks (on its thread) only drop the result into
a mailbox (:class:`_Mailbox`) that the loop drains in batches, with one loop wake-up per burst
of completions rather than one per request. ``_request`` awaits its future directly: the driver's
``request_timeout`` (on the execution profile) ends a request, and the mailbox's sweeper fails
what the driver's timer does not cover, at most about 4 × timeout + 5 s after it was sent. Every
driver error or timeout becomes :class:`chat.errors.Unavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from chat.errors import Unavailable
from chat.ids import MAX_ID, TIMESTAMP_SHIFT, timestamp_ms
from chat.models import Channel, ChannelKind, Message, Page
from chat.store.base import AddResult

if TYPE_CHECKING:
    from cassandra.cluster import Cluster, ResponseFuture, Session
    from cassandra.query import PreparedStatement

    from chat.config import Settings

log = logging.getLogger(__name__)

BUCKET_SPAN_MS = 10 * 86_400_000  # 10 days of Snowflake time per message partition
IDEMPOTENCY_TTL_S = 7 * 86_400  # how long a client_msg_id is remembered
DEFAULT_PORT = 9042

# Timeouts
MIGRATION_TIMEOUT_S = 180.0  # the whole of one `migrate` run (DDL waits for schema agreement)
DDL_TIMEOUT_S = 30.0  # one schema statement
LOCK_TTL_S = 120  # the migration lock lease (a crashed migrator releases it by expiry)

# Limits
_BUCKETS_IN_FLIGHT = 8  # most message partitions one history page reads concurrently
_KNOWN_BUCKETS = 100_000  # (channel, bucket) pairs remembered as indexed (LRU)
_MEMBER_BATCH = 200  # member rows per single-partition batch on create
_WRITE_CONCURRENCY = 32  # parallel per-user writes on create

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.cql$")


def bucket_of(message_id: int) -> int:
    """The time bucket of a Snowflake ID (fixed spans of :data:`BUCKET_SPAN_MS`)."""
    return (message_id >> TIMESTAMP_SHIFT) // BUCKET_SPAN_MS


# Migrations


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]
    checksum: str


def load_migrations() -> list[Migration]:
    """The packaged ``migrations/NNNN_name.cql`` files, in version order."""
    out = []
    for entry in resources.files("chat.store").joinpath("migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if not match:
            continue
        text = entry.read_text(encoding="utf-8")
        out.append(Migration(int(match.group(1)), entry.name, tuple(split_cql(text)), hashlib.sha256(text.encode()).hexdigest()[:16]))
    out.sort(key=lambda m: m.version)
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in {[m.name for m in out]}")
    return out


def split_cql(text: str) -> list[str]:
    """Statements of a CQL file: ``--`` comments dropped, split on ``;`` at line ends."""
    lines = [line.split("--", 1)[0].rstrip() for line in text.splitlines()]
    statements, current = [], []
    for line in lines:
        if not line.strip():
            continue
        current.append(line)
        if line.endswith(";"):
            statements.append("\n".join(current).rstrip(";").strip())
            current = []
    if current:
        statements.append("\n".join(current).strip())
    return statements


# Driver errors → Unavailable


def _unavailable(exc: BaseException, what: str) -> Unavailable:
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


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled and went away, or the backstop failed it
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class _Mailbox:
    """Hands one store's driver completions to one event loop in batches, and bounds every wait.

    **Hand-off.** The driver's I/O thread finishes requests one by one. Scheduling each on the
    loop with ``call_soon_threadsafe`` costs a self-pipe write and a loop wake-up per request.
    Here the I/O thread appends ``(future, result, error)`` to a deque under a lock and calls
    ``call_soon_threadsafe(drain)`` only when the mailbox was empty (the ``scheduled`` flag):
    a burst of completions costs one wake-up, and one ``drain`` on the loop resolves them all.
    It is the same idea as the SQLite store's one wake-up per group commit (BENCHMARKS.md: with
    the direct await below, +15 % node throughput, -25 % client CPU per request).

    **Backstop.** ``_request`` awaits its future without ``asyncio.wait_for`` (which costs a timer
    handle, a waiter future and a done-callback per request). The driver's ``request_timeout``
    ends most requests, but not all of them: cassandra-driver 3.x arms its timer once per
    ``ResponseFuture`` and does not re-arm it for the following pages of a paged result (the
    cancelled timer is never cleared, so ``_start_timer`` does nothing). A request must never
    hang, so futures are also tracked here in two generations. Every ``sweep_s`` the sweeper
    fails what is still unanswered in the old generation with ``Unavailable`` and makes the
    young one old: an unanswered request fails between ``sweep_s`` and ``2 × sweep_s`` after it
    was sent. Per request that is a set insert and a discard; the sweeper is one timer handle
    per loop, armed only while requests are in flight.

    Threads: :meth:`put` runs on the driver's thread (it also runs on the loop's thread when the
    driver had the answer before the callbacks were added) and never raises; everything else
    runs on the loop.
    """

    __slots__ = ("loop", "_items", "_lock", "_scheduled", "_dead", "_young", "_old", "_sweep_s", "_sweeper")

    def __init__(self, loop: asyncio.AbstractEventLoop, sweep_s: float) -> None:
        self.loop = loop
        self._items: deque[tuple[asyncio.Future[Any], Any, BaseException | None]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False  # a drain is queued on the loop: later puts need not wake it
        self._dead = False  # the loop is closed: drop whatever arrives
        self._young: set[asyncio.Future[Any]] = set()
        self._old: set[asyncio.Future[Any]] = set()
        self._sweep_s = sweep_s
        self._sweeper: asyncio.TimerHandle | None = None

    def track(self, future: asyncio.Future[Any]) -> None:
        """Loop thread: ``future`` waits for the driver; the backstop fails it if nothing comes."""
        self._young.add(future)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self._sweep_s, self._sweep)

    def put(self, future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
        """Driver thread: queue one completion; wake the loop only if the mailbox was empty.

        Must never raise: an exception here would surface inside the driver's reactor."""
        with self._lock:
            if self._dead:
                return
            self._items.append((future, result, error))
            if self._scheduled:
                return  # the queued drain will see this item too
            self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except Exception:  # noqa: BLE001 - RuntimeError once the loop is closed: nobody is waiting
            with self._lock:
                self._dead = True
                self._items.clear()

    def _drain(self) -> None:
        """Loop thread: resolve everything that arrived since the last drain."""
        with self._lock:
            items, self._items = self._items, deque()
            # Reset under the lock: a put after this point schedules the next drain itself.
            self._scheduled = False
        young, old = self._young, self._old
        for future, result, error in items:
            young.discard(future)
            old.discard(future)
            try:
                _resolve(future, result, error)
            except Exception:
                log.exception("cassandra: could not resolve a request's future")

    def _sweep(self) -> None:
        """Loop thread: fail the requests unanswered for a whole generation, age the rest."""
        expired, self._old, self._young = self._old, self._young, set()
        failed = 0
        for future in expired:
            if not future.done():
                future.set_exception(Unavailable("message store timed out", retry_after_ms=1000))
                failed += 1
        if failed:
            log.warning("cassandra: %d request(s) got no answer from the driver within %.1f s; failed them", failed, self._sweep_s)
        self._sweeper = self.loop.call_later(self._sweep_s, self._sweep) if self._old else None


def _parse_hosts(hosts: Iterable[str]) -> list[tuple[str, int]]:
    out = []
    for raw in hosts:
        host = raw.strip()
        port = DEFAULT_PORT
        if host.startswith("["):  # [v6::addr]:port
            addr, _, rest = host[1:].partition("]")
            host, port = addr, int(rest[1:]) if rest.startswith(":") else DEFAULT_PORT
        elif host.count(":") == 1:
            host, _, p = host.partition(":")
            port = int(p)
        out.append((host, port))
    return out


class _KeyedLocks:
    """One :class:`asyncio.Lock` per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[Any, tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: Any) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[key]


def _row_to_channel(row: dict[str, Any], channel_id: int | None = None) -> Channel:
    return Channel(
        id=channel_id if channel_id is not None else row["channel_id"],
        kind=ChannelKind(row["kind"]),
        name=row["name"],
        created_by=row["created_by"],
        created_ts=row["created_ts"],
        dm_key=row["dm_key"],
    )


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# CQL of the requests (prepared once per open). Names are unqualified: the session's keyspace.
_CQL: dict[str, tuple[str, bool]] = {
    # name: (statement, is_idempotent)
    "ping": ("SELECT release_version FROM system.local", True),
    "get_channel": ("SELECT channel_id, kind, name, created_by, created_ts, dm_key FROM {ks}.channels WHERE channel_id = ?", True),
    "put_channel": ("INSERT INTO {ks}.channels (channel_id, kind, name, created_by, created_ts, dm_key) VALUES (?, ?, ?, ?, ?, ?)", True),
    "put_member": ("INSERT INTO {ks}.members_by_channel (channel_id, user_id, joined_ts) VALUES (?, ?, ?)", True),
    "put_user_channel": (
        "INSERT INTO {ks}.channels_by_user (user_id, channel_id, kind, name, created_by, created_ts, dm_key) VALUES (?, ?, ?, ?, ?, ?, ?)",
        True,
    ),
    "del_member": ("DELETE FROM {ks}.members_by_channel WHERE channel_id = ? AND user_id = ?", True),
    "del_user_channel": ("DELETE FROM {ks}.channels_by_user WHERE user_id = ? AND channel_id = ?", True),
    "is_member": ("SELECT user_id FROM {ks}.members_by_channel WHERE channel_id = ? AND user_id = ?", True),
    "list_members": ("SELECT user_id FROM {ks}.members_by_channel WHERE channel_id = ? LIMIT ?", True),
    "count_members": ("SELECT COUNT(*) AS n FROM {ks}.members_by_channel WHERE channel_id = ?", True),
    "user_channels": (
        "SELECT channel_id, kind, name, created_by, created_ts, dm_key FROM {ks}.channels_by_user WHERE user_id = ? LIMIT ?",
        True,
    ),
    "get_dm": ("SELECT dm_key, channel_id, name, created_by, created_ts, members FROM {ks}.dm_pairs WHERE dm_key = ?", True),
    "claim_dm": (
        "INSERT INTO {ks}.dm_pairs (dm_key, channel_id, name, created_by, created_ts, members) VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS",
        False,
    ),
    "claim_key": (
        "INSERT INTO {ks}.message_keys (channel_id, sender, client_msg_id, message_id, body) VALUES (?, ?, ?, ?, ?) "
        "IF NOT EXISTS USING TTL ?",
        False,
    ),
    "put_bucket": ("INSERT INTO {ks}.channel_buckets (channel_id, bucket) VALUES (?, ?)", True),
    "put_message": (
        "INSERT INTO {ks}.messages (channel_id, bucket, message_id, sender, body, client_msg_id) VALUES (?, ?, ?, ?, ?, ?)",
        True,
    ),
    "buckets_desc": ("SELECT bucket FROM {ks}.channel_buckets WHERE channel_id = ? AND bucket >= ? AND bucket <= ?", True),
    "buckets_asc": (
        "SELECT bucket FROM {ks}.channel_buckets WHERE channel_id = ? AND bucket >= ? AND bucket <= ? ORDER BY bucket ASC",
        True,
    ),
    "messages_desc": (
        "SELECT message_id, sender, body, client_msg_id FROM {ks}.messages "
        "WHERE channel_id = ? AND bucket = ? AND message_id >= ? AND message_id <= ? LIMIT ?",
        True,
    ),
    "messages_asc": (
        "SELECT message_id, sender, body, client_msg_id FROM {ks}.messages "
        "WHERE channel_id = ? AND bucket = ? AND message_id >= ? AND message_id <= ? ORDER BY message_id ASC LIMIT ?",
        True,
    ),
    "set_read": ("UPDATE {ks}.read_positions USING TIMESTAMP ? SET message_id = ? WHERE user_id = ? AND channel_id = ?", True),
    "get_read": ("SELECT message_id FROM {ks}.read_positions WHERE user_id = ? AND channel_id = ?", True),
}


class CassandraMessageStore:
    """MessageStore on Apache Cassandra (see the module docstring for schema and decisions)."""

    def __init__(
        self,
        hosts: Sequence[str],
        *,
        keyspace: str = "chat",
        consistency: str = "LOCAL_QUORUM",
        replication: str = "{'class': 'SimpleStrategy', 'replication_factor': 1}",
        migrate: bool = False,
        # Timeouts
        timeout_s: float = 2.0,
        connect_timeout_s: float | None = None,
    ) -> None:
        if not re.match(r"^[A-Za-z][A-Za-z0-9_]{0,47}$", keyspace):
            raise ValueError(f"invalid keyspace name {keyspace!r}")
        # (host, port) contact points; the driver discovers the rest of the ring.
        self._contact_points = _parse_hosts(hosts)
        self.keyspace = keyspace
        # Name of a ConsistencyLevel; the serial level (LWTs) follows it: LOCAL_SERIAL for LOCAL_*.
        self._consistency = consistency.upper()
        # CQL map literal used only when the keyspace is created.
        self._replication = replication
        # Apply pending migrations in open() (dev, tests); production runs `chat migrate`.
        self._migrate = migrate
        # Per request: the driver's request_timeout, so no call waits longer for one answer.
        self._timeout_s = timeout_s
        # TCP connect + handshake per host, and the bound of open()'s connect step.
        self._connect_timeout_s = connect_timeout_s if connect_timeout_s is not None else max(1.0, timeout_s)
        self._cluster: Cluster | None = None
        self._session: Session | None = None
        self._ps: dict[str, PreparedStatement] = {}
        # (channel, bucket) pairs known to be in channel_buckets: skips re-writing the index
        # for every message of a bucket. Filled only after the index write succeeded.
        self._known_buckets: OrderedDict[tuple[int, int], None] = OrderedDict()
        # Serialises count-then-insert of limited adds per channel on this node.
        self._member_locks = _KeyedLocks()
        # Driver → loop hand-off for the loop this store is used on (see _Mailbox); replaced if
        # the store is used from another loop. Its backstop generation: an unanswered request
        # fails 2 × timeout + 2.5 to 4 × timeout + 5 s after it was sent, well after the
        # driver's own timeout error, so that error is what callers normally see.
        self._mailbox: _Mailbox | None = None
        self._backstop_sweep_s = 2 * timeout_s + 2.5
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> CassandraMessageStore:
        return cls(
            settings.cassandra_hosts,
            keyspace=settings.cassandra_keyspace,
            consistency=settings.cassandra_consistency,
            replication=settings.cassandra_replication,
            migrate=settings.cassandra_migrate,
            timeout_s=settings.cassandra_timeout_s,
        )

    # Lifecycle

    async def open(self) -> None:
        await self._connect()
        try:
            if self._migrate:
                names = await self._run_migrations()
                if names:
                    log.info("cassandra keyspace %s: applied %s", self.keyspace, ", ".join(names))
            await self._in_thread(self._prepare_sync, 10 * self._timeout_s + 10, "prepare")
        except BaseException:
            await self.close()
            raise

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        connecting = loop.run_in_executor(None, self._connect_sync)
        # Both connection attempts (v5, then v4) may each wait for the connect timeouts.
        bound = 4 * self._connect_timeout_s + 5 * self._timeout_s + 2
        try:
            self._cluster, self._session = await asyncio.wait_for(asyncio.shield(connecting), bound)
        except (TimeoutError, asyncio.CancelledError) as exc:
            # The thread cannot be interrupted: close what it opens once it is done.
            connecting.add_done_callback(_shutdown_when_done)
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise Unavailable("message store did not connect in time", retry_after_ms=2000) from None
        except Exception as exc:  # noqa: BLE001 - any driver error at connect time
            raise _unavailable(exc, "connect") from None

    async def _run_migrations(self) -> list[str]:
        cluster, session = self._cluster, self._session
        assert cluster is not None and session is not None
        return await self._in_thread(
            lambda: _migrate_sync(cluster, session, self.keyspace, self._replication, self._timeout_s), MIGRATION_TIMEOUT_S, "migrate"
        )

    def _connect_sync(self) -> tuple[Cluster, Session]:
        from cassandra import ConsistencyLevel, ProtocolVersion
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable
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
        last_error: BaseException | None = None
        for version in (ProtocolVersion.V5, ProtocolVersion.V4):
            profile = ExecutionProfile(
                load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
                consistency_level=consistency,
                serial_consistency_level=serial,
                request_timeout=self._timeout_s,
                row_factory=dict_factory,
            )
            cluster = Cluster(
                contact_points=self._contact_points,
                protocol_version=version,
                execution_profiles={EXEC_PROFILE_DEFAULT: profile},
                connect_timeout=self._connect_timeout_s,
                control_connection_timeout=self._connect_timeout_s,
                reconnection_policy=ExponentialReconnectionPolicy(0.5, 30.0),
                **extra,
            )
            try:
                return cluster, cluster.connect()
            except NoHostAvailable as exc:
                cluster.shutdown()
                last_error = exc
                if not any("protocol" in str(e).lower() for e in exc.errors.values()):
                    raise
                log.info("cassandra refused protocol v%d; trying an older one", version)
            except BaseException:
                cluster.shutdown()
                raise
        assert last_error is not None
        raise last_error

    def _prepare_sync(self) -> None:
        assert self._session is not None
        for name, (cql, idempotent) in _CQL.items():
            ps = self._session.prepare(cql.format(ks=self.keyspace))
            ps.is_idempotent = idempotent
            self._ps[name] = ps

    async def _in_thread(self, fn: Any, bound: float, what: str) -> Any:
        try:
            return await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, fn), bound)
        except TimeoutError:
            raise Unavailable(f"message store {what} timed out", retry_after_ms=2000) from None
        except Unavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - any driver error
            raise _unavailable(exc, what) from None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        cluster, self._cluster, self._session = self._cluster, None, None
        if cluster is not None:
            try:
                await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, cluster.shutdown), 30)
            except Exception:
                log.warning("cassandra cluster shutdown did not finish cleanly", exc_info=True)

    async def ping(self) -> None:
        await self._execute("ping", ())

    # The async bridge

    async def _execute(self, name: str, params: Sequence[Any], *, what: str | None = None) -> list[dict[str, Any]]:
        return await self._run(self._ps.get(name), params, what or name)

    async def _run(self, statement: Any, params: Sequence[Any] | None, what: str) -> list[dict[str, Any]]:
        try:
            return await self._request(statement, params)
        except Unavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - the driver's error
            raise _unavailable(exc, what) from None

    async def _request(self, statement: Any, params: Sequence[Any] | None) -> list[dict[str, Any]]:
        """Execute on the driver's thread, resolve on the loop; every page of the result is read.

        Raises the driver's exception as is (callers map it), or Unavailable if not open."""
        session = self._session
        if session is None or statement is None or self._closed:
            raise Unavailable("message store is not open", retry_after_ms=1000)
        loop = asyncio.get_running_loop()
        mailbox = self._mailbox
        if mailbox is None or mailbox.loop is not loop:
            mailbox = self._mailbox = _Mailbox(loop, self._backstop_sweep_s)
        future: asyncio.Future[list[dict[str, Any]]] = loop.create_future()
        rows: list[dict[str, Any]] = []
        # Uses the execution profile's request_timeout: the driver fails the request itself.
        response: ResponseFuture = session.execute_async(statement, params)
        # Tracked only once the request is really out (execute_async may raise), so the
        # backstop never fails a future that nobody awaits.
        mailbox.track(future)
        put = mailbox.put

        # Both run on the driver's I/O thread: no blocking, no raising, only hand-off.
        def on_page(page: list[dict[str, Any]] | None) -> None:
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
        # No wait_for: the driver's timeout or the mailbox's backstop resolves this future.
        # A cancelled caller cancels the future; a late answer is then dropped by _resolve.
        return await future

    async def _cas(self, name: str, params: Sequence[Any]) -> dict[str, Any]:
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
                raise _unavailable(exc, name) from None
        raise AssertionError("unreachable")

    async def _batch(self, kind: str, items: list[tuple[str, Sequence[Any]]], what: str) -> None:
        from cassandra.query import BatchStatement, BatchType

        batch = BatchStatement(batch_type=BatchType.LOGGED if kind == "logged" else BatchType.UNLOGGED)
        for name, params in items:
            batch.add(self._ps[name], params)
        batch.is_idempotent = True  # plain writes with one client timestamp (see module docstring)
        await self._run(batch, None, what)

    # Channels and members

    async def create_channel(self, channel: Channel, members: list[str]) -> None:
        users = list(dict.fromkeys(members))
        await self._write_memberships(channel, users, channel.created_ts)
        # Last: the channel becomes visible only once its members are in place.
        await self._put_channel(channel)

    async def _put_channel(self, channel: Channel) -> None:
        await self._execute(
            "put_channel", (channel.id, channel.kind.value, channel.name, channel.created_by, channel.created_ts, channel.dm_key)
        )

    async def _write_memberships(self, channel: Channel, users: list[str], joined_ts: int) -> None:
        """Member rows (single-partition batches) and the user → channel rows (in parallel)."""
        for i in range(0, len(users), _MEMBER_BATCH):
            chunk = users[i : i + _MEMBER_BATCH]
            await self._batch("unlogged", [("put_member", (channel.id, u, joined_ts)) for u in chunk], "put members")
        for i in range(0, len(users), _WRITE_CONCURRENCY):
            await asyncio.gather(
                *(self._execute("put_user_channel", self._user_channel_row(u, channel)) for u in users[i : i + _WRITE_CONCURRENCY])
            )

    @staticmethod
    def _user_channel_row(user: str, channel: Channel) -> tuple[Any, ...]:
        return (user, channel.id, channel.kind.value, channel.name, channel.created_by, channel.created_ts, channel.dm_key)

    async def get_or_create_dm(self, channel: Channel, members: tuple[str, str]) -> tuple[Channel, bool]:
        key = channel.dm_key
        if key is None:
            raise ValueError("a DM channel needs a dm_key")
        # Fast path: the pair's DM exists and is complete (its channel row is written last).
        rows = await self._execute("get_dm", (key,))
        if rows:
            existing = await self._get_channel(rows[0]["channel_id"])
            if existing is not None:
                return existing, False
            return await self._finish_dm(rows[0], created=False)
        claim = await self._cas("claim_dm", (key, channel.id, channel.name, channel.created_by, channel.created_ts, list(members)))
        if claim["[applied]"] or claim["channel_id"] == channel.id:
            await self._write_memberships(channel, list(members), channel.created_ts)
            await self._put_channel(channel)
            return channel, True
        # Lost the race: the winner's claim came back with the LWT's answer.
        existing = await self._get_channel(claim["channel_id"])
        if existing is not None:
            return existing, False
        return await self._finish_dm(claim, created=False)

    async def _finish_dm(self, claim: dict[str, Any], *, created: bool) -> tuple[Channel, bool]:
        """(Re)write a claimed DM whose channel row is missing: its creator is still writing it,
        or crashed. The writes repeat the claim's values, so doing them twice is harmless."""
        channel = Channel(
            claim["channel_id"], ChannelKind.DM, claim["name"], claim["created_by"], claim["created_ts"], dm_key=claim["dm_key"]
        )
        await self._write_memberships(channel, list(claim["members"] or ()), channel.created_ts)
        await self._put_channel(channel)
        return channel, created

    async def get_channel(self, channel_id: int) -> Channel | None:
        return await self._get_channel(channel_id)

    async def _get_channel(self, channel_id: int) -> Channel | None:
        rows = await self._execute("get_channel", (channel_id,))
        return _row_to_channel(rows[0]) if rows else None

    async def add_member(self, channel_id: int, user: str, *, max_members: int | None = None) -> AddResult:
        if max_members is None:
            return await self._add_member(channel_id, user, None)
        # One node: count-then-insert under a per-channel lock is exact (see module docstring).
        async with self._member_locks.hold(channel_id):
            return await self._add_member(channel_id, user, max_members)

    async def _add_member(self, channel_id: int, user: str, max_members: int | None) -> AddResult:
        channel = await self._get_channel(channel_id)
        if channel is None:
            return AddResult.NO_CHANNEL
        if await self.is_member(channel_id, user):
            return AddResult.ALREADY
        if max_members is not None and await self.count_members(channel_id) >= max_members:
            return AddResult.FULL
        await self._batch(
            "logged",
            [("put_member", (channel_id, user, _now_ms())), ("put_user_channel", self._user_channel_row(user, channel))],
            "add member",
        )
        return AddResult.ADDED

    async def remove_member(self, channel_id: int, user: str) -> bool:
        if not await self.is_member(channel_id, user):
            return False
        await self._batch("logged", [("del_member", (channel_id, user)), ("del_user_channel", (user, channel_id))], "remove member")
        return True

    async def is_member(self, channel_id: int, user: str) -> bool:
        return bool(await self._execute("is_member", (channel_id, user)))

    async def list_members(self, channel_id: int, *, limit: int = 1000) -> list[str]:
        if limit <= 0:
            return []
        return [r["user_id"] for r in await self._execute("list_members", (channel_id, limit))]

    async def count_members(self, channel_id: int) -> int:
        # COUNT(*) reads the channel's member partition: fine for groups; for very large
        # rooms a counter table would be cheaper (and approximate).
        rows = await self._execute("count_members", (channel_id,))
        return int(rows[0]["n"]) if rows else 0

    async def list_user_channels(self, user: str, *, limit: int = 1000) -> list[Channel]:
        if limit <= 0:
            return []
        return [_row_to_channel(r) for r in await self._execute("user_channels", (user, limit))]

    # Messages

    async def insert_message(self, message: Message) -> tuple[Message, bool]:
        claim = await self._cas(
            "claim_key", (message.channel, message.sender, message.client_msg_id, message.id, message.text, IDEMPOTENCY_TTL_S)
        )
        if claim["[applied]"] or claim["message_id"] == message.id:
            await self._store_message(message)
            return message, True
        stored = Message(
            claim["message_id"], message.channel, message.sender, claim["body"], timestamp_ms(claim["message_id"]), message.client_msg_id
        )
        # Re-write it: a no-op if the claimer stored it, the repair if the claimer died before.
        await self._store_message(stored)
        return stored, False

    async def _store_message(self, message: Message) -> None:
        bucket = bucket_of(message.id)
        key = (message.channel, bucket)
        if key in self._known_buckets:
            self._known_buckets.move_to_end(key)
        else:
            # Index first: a message is never in a bucket that history does not know about.
            await self._execute("put_bucket", key)
            self._known_buckets[key] = None
            if len(self._known_buckets) > _KNOWN_BUCKETS:
                self._known_buckets.popitem(last=False)
        await self._execute("put_message", (message.channel, bucket, message.id, message.sender, message.text, message.client_msg_id))

    async def history(self, channel_id: int, *, before: int | None = None, after: int | None = None, limit: int = 50) -> Page:
        want = limit + 1  # one more than the page tells whether more exist
        if want <= 0:
            return Page([], False)
        hi = MAX_ID if before is None else min(before - 1, MAX_ID)  # IDs are bigints
        if after is not None:
            lo = after + 1
            if lo > hi:
                return Page([], False)
            rows = await self._walk(channel_id, lo, hi, want, ascending=True)
            return Page([self._to_message(channel_id, r) for r in rows[:limit]], len(rows) > limit)
        if hi < 0:
            return Page([], False)
        rows = await self._walk(channel_id, 0, hi, want, ascending=False)
        return Page([self._to_message(channel_id, r) for r in reversed(rows[:limit])], len(rows) > limit)

    async def _walk(self, channel_id: int, lo: int, hi: int, want: int, *, ascending: bool) -> list[dict[str, Any]]:
        """Up to ``want`` rows with ``lo <= id <= hi``, in the direction of travel, reading the
        channel's non-empty buckets in order: 1, then 2, 4, … at a time while more are needed."""
        buckets = [
            r["bucket"] for r in await self._execute("buckets_asc" if ascending else "buckets_desc", (channel_id, bucket_of(lo), bucket_of(hi)))
        ]
        query = "messages_asc" if ascending else "messages_desc"
        out: list[dict[str, Any]] = []
        i, width = 0, 1
        while i < len(buckets) and len(out) < want:
            need = want - len(out)
            chunk = buckets[i : i + width]
            pages = await asyncio.gather(*(self._execute(query, (channel_id, b, lo, hi, need), what="history") for b in chunk))
            for rows in pages:
                out.extend(rows[: want - len(out)])
                if len(out) >= want:
                    break
            i += len(chunk)
            width = min(width * 2, _BUCKETS_IN_FLIGHT)
        return out

    @staticmethod
    def _to_message(channel_id: int, row: dict[str, Any]) -> Message:
        mid = row["message_id"]
        return Message(mid, channel_id, row["sender"], row["body"], timestamp_ms(mid), row["client_msg_id"])

    # Read positions

    async def set_read(self, user: str, channel_id: int, message_id: int) -> int:
        # The write timestamp IS the position: last-write-wins keeps the largest.
        await self._execute("set_read", (message_id, message_id, user, channel_id))
        current = await self.get_read(user, channel_id)
        return max(message_id, current or 0)

    async def get_read(self, user: str, channel_id: int) -> int | None:
        rows = await self._execute("get_read", (user, channel_id))
        return int(rows[0]["message_id"]) if rows else None


def _shutdown_when_done(connecting: asyncio.Future[Any]) -> None:
    """A connect that finished after open() gave up: close what it opened, off the loop."""
    if connecting.cancelled() or connecting.exception() is not None:
        return
    cluster, _ = connecting.result()
    asyncio.get_running_loop().run_in_executor(None, cluster.shutdown)


# Migrations (blocking: run in an executor thread)


def _migrate_sync(cluster: Cluster, session: Session, keyspace: str, replication: str, timeout_s: float) -> list[str]:
    """Create the keyspace and apply pending migrations in order; returns the names applied.

    Migration files name tables without a keyspace: they run on a session of their own that
    is bound to it (the request session stays unbound, see ``_CQL``).
    """
    session.execute(
        f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {replication} AND durable_writes = true",
        timeout=DDL_TIMEOUT_S,
    )
    bound = cluster.connect(keyspace)
    try:
        return _apply_migrations(bound, timeout_s)
    finally:
        bound.shutdown()


def _apply_migrations(session: Session, timeout_s: float) -> list[str]:
    """A lease row (``schema_lock``, LWT with a TTL) keeps two nodes from running DDL at once;
    whoever waited re-reads the applied versions afterwards."""
    session.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, name text, checksum text, applied_at timestamp)",
        timeout=DDL_TIMEOUT_S,
    )
    session.execute("CREATE TABLE IF NOT EXISTS schema_lock (id int PRIMARY KEY, owner text)", timeout=DDL_TIMEOUT_S)
    migrations = load_migrations()

    def applied() -> dict[int, dict[str, Any]]:
        return {r["version"]: r for r in session.execute("SELECT version, name, checksum FROM schema_migrations", timeout=timeout_s * 5)}

    done = applied()
    for m in migrations:
        if m.version in done and done[m.version]["checksum"] != m.checksum:
            log.warning("migration %s changed after it was applied (checksum %s, now %s)", m.name, done[m.version]["checksum"], m.checksum)
    if all(m.version in done for m in migrations):
        return []
    owner = uuid.uuid4().hex
    deadline = time.monotonic() + MIGRATION_TIMEOUT_S
    while True:
        row = session.execute(
            f"INSERT INTO schema_lock (id, owner) VALUES (0, %s) IF NOT EXISTS USING TTL {LOCK_TTL_S}", (owner,), timeout=timeout_s * 5
        ).one()
        if row["[applied]"] or row["owner"] == owner:
            break
        if time.monotonic() > deadline:
            raise TimeoutError("another node holds the schema migration lock")
        time.sleep(1.0)
    names = []
    try:
        done = applied()
        for m in migrations:
            if m.version in done:
                continue
            log.info("applying migration %s (%d statements)", m.name, len(m.statements))
            for statement in m.statements:
                session.execute(statement, timeout=DDL_TIMEOUT_S)
            session.execute(
                "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (%s, %s, %s, toTimestamp(now()))",
                (m.version, m.name, m.checksum),
                timeout=timeout_s * 5,
            )
            names.append(m.name)
    finally:
        session.execute("DELETE FROM schema_lock WHERE id = 0 IF owner = %s", (owner,), timeout=timeout_s * 5)
    return names


async def migrate(settings: Settings) -> int:
    """``chat migrate``: create the keyspace and apply pending migrations; prints what it did."""
    store = CassandraMessageStore.from_settings(settings)
    try:
        await store._connect()
        names = await store._run_migrations()
    except Unavailable as exc:
        print(f"chat migrate: {exc.message} (see the log for details)")
        return 1
    finally:
        await store.close()
    for name in names:
        print(f"applied {name}")
    if not names:
        print(f"keyspace {settings.cassandra_keyspace}: schema is up to date")
    return 0
