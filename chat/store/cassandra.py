"""Cassandra MessageStore: the clustered store (``cassandra-driver``, prepared statements, token-aware).

Schema (versioned CQL in ``chat/store/migrations/``, applied by :mod:`chat.store.cassandra_schema`)::

    channels            (channel_id)                        the channel; written last on create
    members_by_channel  ((channel_id), user_id)             members in user order
    channels_by_user    ((user_id), channel_id DESC)        the user's channels, fields copied in
    dm_pairs            (dm_key)                            LWT claim: one DM per pair
    messages            ((channel_id, bucket), message_id DESC)
    channel_buckets     ((channel_id), bucket DESC)         the channel's non-empty buckets
    message_keys        ((channel_id, sender, client_msg_id))  LWT claim: idempotency, holds the message
    read_positions      ((user_id), channel_id)             written USING TIMESTAMP = message ID
    notify_outbox       ((shard), due_ms, notification_id)  offline notifications (cassandra_outbox.py)

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
* **Batches of a hot room** (``insert_messages``). A hot room's messages all land in one
  partition, ``(channel, bucket)``: that partition — one replica set — is what a busy room
  overloads, so its rows are written as **one unlogged batch per partition** (a single-partition
  batch is applied as one mutation: cheap, atomic and isolated). Idempotency stays exactly as
  above: every message still takes its own claim first, because a claim must live in the
  partition of its key (``(channel, sender, client_msg_id)``, spread over the whole ring, so the
  claims of a hot room hurt no single replica set) and a conditional batch may only touch one
  partition. The claims run concurrently; then every claimed message, and every original a
  claim handed back (the same repair as above), is written in the partition's batch. A key
  repeated inside one batch is claimed once: its first message is stored, the others get it
  back. If any request fails the batch raises ``Unavailable``; some of its messages may then be
  claimed or stored, and a retry (same IDs, or the same keys with new IDs) stores each once.
  Statements per batch of n messages: n claims + 1 batch (+ 1 bucket-index write when the
  partition is new), instead of 2n (+1) one by one; :attr:`CassandraMessageStore.statements`
  counts them by kind.
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
  Snowflake ID are marked ``is_idempotent``; LWTs never are (the client retries those once,
  after a CAS timeout; the store recognises its own claim by its ID).
* **Batches**: unlogged only within one partition (a channel's member rows); the two
  directions of a membership change go in one small *logged* batch so they cannot diverge.

Requests go through :class:`~chat.store.cassandra_client.CassandraClient`, which runs them on
the driver's thread, bounds every wait and turns every driver error into
:class:`chat.errors.Unavailable`; the statements are in :mod:`chat.store.cassandra_cql`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from chat.config import KEYSPACE_NAME
from chat.ids import MAX_ID, TIMESTAMP_SHIFT, timestamp_ms, wall_clock_ms
from chat.models import Channel, ChannelKind, Message, Page
from chat.store import cassandra_cql, cassandra_outbox
from chat.store.base import AddResult, one_channel
from chat.store.cassandra_client import CassandraClient, Row
from chat.store.cassandra_schema import apply_migrations
from chat.store.locks import KeyedLocks
from chat.store.outbox import Notification, OutboxItem

if TYPE_CHECKING:
    from chat.config import Settings

log = logging.getLogger(__name__)

BUCKET_SPAN_MS = 10 * 86_400_000  # 10 days of Snowflake time per message partition
IDEMPOTENCY_TTL_S = 7 * 86_400  # how long a client_msg_id is remembered

# Limits
_BUCKETS_IN_FLIGHT = 8  # most message partitions one history page reads concurrently
_KNOWN_BUCKETS = 100_000  # (channel, bucket) pairs remembered as indexed (LRU)
_MEMBER_BATCH = 200  # member rows per single-partition batch on create
_WRITE_CONCURRENCY = 32  # parallel per-user writes on create


def bucket_of(message_id: int) -> int:
    """The time bucket of a Snowflake ID (fixed spans of :data:`BUCKET_SPAN_MS`)."""
    return (message_id >> TIMESTAMP_SHIFT) // BUCKET_SPAN_MS


def _row_to_channel(row: Row) -> Channel:
    return Channel(row["channel_id"], ChannelKind(row["kind"]), row["name"], row["created_by"], row["created_ts"], dm_key=row["dm_key"])


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
        if not KEYSPACE_NAME.fullmatch(keyspace):
            raise ValueError(f"invalid keyspace name {keyspace!r}")
        self.keyspace = keyspace
        # CQL map literal used only when the keyspace is created.
        self._replication = replication
        # Apply pending migrations in open() (dev, tests); production runs `chat migrate`.
        self._migrate = migrate
        self._client = CassandraClient(hosts, consistency=consistency, timeout_s=timeout_s, connect_timeout_s=connect_timeout_s)
        # (channel, bucket) pairs known to be in channel_buckets: skips re-writing the index
        # for every message of a bucket. Filled only after the index write succeeded.
        self._known_buckets: OrderedDict[tuple[int, int], None] = OrderedDict()
        # Serialises count-then-insert of limited adds per channel on this node.
        self._member_locks = KeyedLocks()
        # The notification outbox's requests, on the same client.
        self._outbox = cassandra_outbox.CassandraOutbox(self._client)
        # Message writes sent, by kind ("claim", "insert", "batch", "batch_rows", "index"): what
        # batching saves, for tests and metrics.
        self.statements: Counter[str] = Counter()

    @classmethod
    def from_settings(cls, settings: Settings) -> CassandraMessageStore:
        """The store that the ``CHAT_CASSANDRA_*`` settings describe."""
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
        await self._client.connect()
        try:
            if self._migrate:
                names = await apply_migrations(self._client, self.keyspace, self._replication)
                if names:
                    log.info("cassandra keyspace %s: applied %s", self.keyspace, ", ".join(names))
            await self._client.prepare(cassandra_cql.for_keyspace(self.keyspace))
            await self._client.prepare(cassandra_outbox.statements(self.keyspace))
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        await self._client.close()

    async def ping(self) -> None:
        await self._execute("ping", ())

    async def _execute(self, name: str, params: Sequence[Any], *, what: str | None = None) -> list[Row]:
        return await self._client.execute(name, params, what=what)

    async def _cas(self, name: str, params: Sequence[Any]) -> Row:
        return await self._client.cas(name, params)

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
            await self._client.batch("unlogged", [("put_member", (channel.id, u, joined_ts)) for u in chunk], "put members")
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

    async def get_dm(self, dm_key: str) -> Channel | None:
        rows = await self._execute("get_dm", (dm_key,))
        # A claim whose channel row is not written yet is a DM being created: not there yet.
        return await self._get_channel(rows[0]["channel_id"]) if rows else None

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
        await self._client.batch(
            "logged",
            [("put_member", (channel_id, user, wall_clock_ms())), ("put_user_channel", self._user_channel_row(user, channel))],
            "add member",
        )
        return AddResult.ADDED

    async def remove_member(self, channel_id: int, user: str) -> bool:
        if not await self.is_member(channel_id, user):
            return False
        await self._client.batch("logged", [("del_member", (channel_id, user)), ("del_user_channel", (user, channel_id))], "remove member")
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

    async def list_user_channels(self, user: str, *, before: int | None = None, limit: int = 1000) -> list[Channel]:
        if limit <= 0:
            return []
        at_most = MAX_ID if before is None else before - 1  # one statement for every page
        return [_row_to_channel(r) for r in await self._execute("user_channels", (user, at_most, limit))]

    # Messages

    async def insert_message(self, message: Message) -> tuple[Message, bool]:
        stored, created = await self._claim(message)
        await self._store_messages([stored])
        return stored, created

    async def insert_messages(self, messages: Sequence[Message]) -> list[tuple[Message, bool]]:
        one_channel(messages)
        first: dict[tuple[str, str], int] = {}  # key → index of its first message in the batch
        claimers = [i for i, m in enumerate(messages) if first.setdefault((m.sender, m.client_msg_id), i) == i]
        results = await asyncio.gather(*(self._claim(messages[i]) for i in claimers), return_exceptions=True)
        claims: dict[int, tuple[Message, bool]] = {}
        for i, result in zip(claimers, results, strict=True):
            if isinstance(result, BaseException):
                raise result  # every claim has finished: nothing of this batch is still in flight
            claims[i] = result
        await self._store_messages([stored for stored, _ in claims.values()])
        return [claims.get(i) or (claims[first[(m.sender, m.client_msg_id)]][0], False) for i, m in enumerate(messages)]

    async def _claim(self, message: Message) -> tuple[Message, bool]:
        """Take the idempotency claim: ``(message, True)``, or the original the key already holds."""
        self.statements["claim"] += 1
        claim = await self._cas(
            "claim_key", (message.channel, message.sender, message.client_msg_id, message.id, message.text, IDEMPOTENCY_TTL_S)
        )
        if claim["[applied]"] or claim["message_id"] == message.id:
            return message, True
        # A retry: the original, to return and to write again (a no-op if the claimer stored it,
        # the repair if the claimer died before).
        return Message(
            claim["message_id"], message.channel, message.sender, claim["body"], timestamp_ms(claim["message_id"]), message.client_msg_id
        ), False

    async def _store_messages(self, messages: list[Message]) -> None:
        """Write claimed messages: the bucket index first (a message is never in a bucket that
        history does not know about), then one statement per partition."""
        partitions: dict[tuple[int, int], dict[int, Message]] = {}
        for message in messages:
            partitions.setdefault((message.channel, bucket_of(message.id)), {})[message.id] = message
        await asyncio.gather(*(self._index(key) for key in partitions if key not in self._known_buckets))
        await asyncio.gather(*(self._write_partition(key, list(rows.values())) for key, rows in partitions.items()))

    async def _index(self, key: tuple[int, int]) -> None:
        self.statements["index"] += 1
        await self._execute("put_bucket", key)
        self._known_buckets[key] = None
        if len(self._known_buckets) > _KNOWN_BUCKETS:
            self._known_buckets.popitem(last=False)

    async def _write_partition(self, key: tuple[int, int], messages: list[Message]) -> None:
        if key in self._known_buckets:
            self._known_buckets.move_to_end(key)  # recently used: evicted last
        channel, bucket = key
        rows = [(channel, bucket, m.id, m.sender, m.text, m.client_msg_id) for m in messages]
        if len(rows) == 1:
            self.statements["insert"] += 1
            await self._execute("put_message", rows[0])
            return
        self.statements["batch"] += 1
        self.statements["batch_rows"] += len(rows)
        await self._client.batch("unlogged", [("put_message", row) for row in rows], "message batch")

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

    # Notification outbox (chat/store/outbox.py; the CQL is chat/store/cassandra_outbox.py)

    async def outbox_put(self, notifications: Sequence[Notification]) -> None:
        await self._outbox.put(notifications)

    async def outbox_claim(self, now_ms: int, *, limit: int, lease_ms: int, oldest_ms: int) -> list[OutboxItem]:
        return await self._outbox.claim(now_ms, limit=limit, lease_ms=lease_ms, oldest_ms=oldest_ms)

    async def outbox_reschedule(self, item: OutboxItem, due_ms: int) -> None:
        await self._outbox.reschedule(item, due_ms)

    async def outbox_delete(self, item: OutboxItem) -> None:
        await self._outbox.delete(item)
