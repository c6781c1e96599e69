"""The node's dynamic settings: changed at run time on every node, never with a restart.

Declared here, in one place, with their types, bounds and defaults; stored by the discovery
package's ConfigStore (a watched znode with ZooKeeper, a file in the data dir otherwise);
read with ``chat config get``, changed with ``chat config set KEY VALUE`` or ``PUT /v1/ops/config``.
A change reaches every node within a second; a bad value, or values that do not go together, are
refused with the reason and nothing is applied. docs/operations.md says what operators do with
each group.

The hot-room groups mirror the settings dataclasses of ``chat.hot`` field by field (a key is the
group's prefix + the field's name, the default is the field's default — but for the relay's
breaker, see ``_RELAY_BREAKER``), so the pure modules stay the one place a default lives;
:func:`values` builds those dataclasses from a snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any

from chat.hot import from_settings
from chat.hot.batcher import BatcherConfig
from chat.hot.breaker import BreakerConfig
from chat.hot.coalescer import CoalescerConfig
from chat.hot.detector import Thresholds
from chat.hot.limits import LaneConfig
from discovery.config.schema import Schema, Setting, Value

# (minimum, maximum, doc) per field of each chat.hot settings dataclass.
_Spec = tuple[float, float, str]

_THRESHOLDS: dict[str, _Spec] = {
    "hot_send_per_s": (0.1, 1e6, "messages/s sent to a room, cluster-wide, that make it hot"),
    "hot_fanout_per_s": (1, 1e9, "deliveries/s to sockets (messages × local recipients), cluster-wide, that make a room hot"),
    "hot_fetch_per_s": (0.1, 1e6, "history reads/s of a room, cluster-wide, that make it hot"),
    "hot_join_per_s": (0.1, 1e6, "joins and subscribes/s of a room, cluster-wide, that make it hot"),
    "hot_cool_ratio": (0.01, 0.99, "a hot room cools only once every rate stays below threshold × this"),
    "hot_cool_s": (0, 3600, "… for this many seconds without interruption"),
    "hot_local_floor_ratio": (0.01, 1, "a node reports a room to the others above threshold × this locally (≤ 1 / nodes a room spreads over)"),
    "hot_remote_ttl_s": (0.6, 60, "another node's report of a room counts this long (reports go out every 0.5 s)"),
}
_BREAKER: dict[str, _Spec] = {
    "window_s": (1, 600, "seconds of requests the error and slow ratios are taken over"),
    "min_requests": (1, 1e6, "fewer requests in the window: no verdict (HEALTHY)"),
    "slow_s": (0.01, 60, "a request this slow (also one still in flight this long) counts as slow"),
    "caution_error_ratio": (0.001, 1, "error ratio that turns it CAUTION (advisory)"),
    "critical_error_ratio": (0.001, 1, "error ratio that turns it CRITICAL: fail fast with unavailable"),
    "caution_slow_ratio": (0.001, 1, "slow ratio that turns it CAUTION"),
    "critical_slow_ratio": (0.001, 1, "slow ratio that turns it CRITICAL"),
    "recover_ratio": (0.01, 1, "CAUTION ends below the caution lines × this"),
    "open_s": (0.1, 600, "CRITICAL fails fast this long before the first probes"),
    "max_open_s": (0.1, 3600, "… doubling after each failed probe round, up to this"),
    "probes": (1, 100, "requests let through per probe round; all must succeed fast to recover"),
    "probe_timeout_s": (0.1, 600, "a probe round without a verdict after this has failed"),
    "stall_requests": (1, 1e6, "this many requests in flight past slow_s, with no answer for slow_s, turn it CRITICAL at once"),
}
_LANES: dict[str, _Spec] = {
    "budget_per_s": (1, 1e7, "storage writes/s (one per message) this node admits, all lanes together"),
    "burst_s": (0.001, 10, "the budget may run this far ahead"),
    "interactive_weight": (0.01, 1000, "interactive chat's weight (with every lane busy its share is weight / sum of weights)"),
    "hot_weight": (0.01, 1000, "hot rooms' weight"),
    "bot_weight": (0.01, 1000, "bots' weight (at most interactive_weight)"),
    "hot_max_share": (0.01, 1, "hot rooms never take more of the budget than this"),
    "bot_max_share": (0.01, 1, "bots never take more of the budget than this"),
    "interactive_queue": (1, 1e6, "interactive writes waiting before more are refused (unavailable)"),
    "hot_queue": (1, 1e6, "hot-room writes waiting before more are refused (throttled)"),
    "bot_queue": (1, 1e6, "bot writes waiting before more are refused (rate_limited)"),
}
_BATCHER: dict[str, _Spec] = {
    "linger_s": (0, 1, "a hot room's first queued write waits this long for company"),
    "max_batch": (1, 1000, "messages per storage batch"),
    "max_batch_bytes": (1024, 1 << 24, "bytes of text per storage batch (Cassandra fails batches over batch_size_fail_threshold)"),
    "statements_per_s": (1, 1e6, "storage batches/s this node writes, all hot rooms together"),
    "burst_s": (0.001, 10, "the batch budget may run this far ahead"),
    "max_inflight": (1, 64, "batches of one room written at once"),
    "max_queue": (1, 1e6, "messages queued per room before sends are refused (throttled)"),
    "max_items": (1, 1e7, "messages queued or being written, all rooms, before sends are refused"),
    "max_partitions": (1, 1e6, "rooms with queued writes at once"),
    "max_age_s": (0.01, 60, "refuse sends to a room while its oldest queued write has waited this long"),
}
_COALESCER: dict[str, _Spec] = {
    "window_s": (0, 1, "a hot room's live messages are gathered this long into one messages frame"),
    "max_messages": (1, 10_000, "… or until this many"),
    "max_bytes": (1024, 1 << 24, "… or this many bytes"),
    "max_rooms": (1, 1e6, "rooms gathering at once; beyond, messages pass one by one"),
}

_OWN: list[Setting] = [
    # Kill switches: each protection of a hot room on its own.
    Setting("hot_coalescing", bool, True, "gather a hot room's live messages into messages frames"),
    Setting("hot_batching", bool, True, "write a hot room's messages to storage in batches under batch_statements_per_s"),
    Setting("hot_waiting_room", bool, True, "queue joins to a hot room over hot_room_join_per_s (off: refuse them with throttled)"),
    Setting("hot_history_window", bool, True, "serve a hot room's recent history from memory, identical concurrent reads as one"),
    Setting("hot_room_limits", bool, True, "limit sends, joins and storage reads per hot room (throttled + retry_after_ms)"),
    Setting("hot_suppress_ephemeral", bool, True, "drop typing and presence pushes in hot rooms"),
    # Per hot room, per node.
    Setting("hot_room_send_per_s", float, 100.0, "messages/s one node accepts for one hot room", minimum=0.1, maximum=1e6),
    Setting("hot_room_send_burst", int, 100, "… saved up at most", minimum=1, maximum=1_000_000),
    Setting("hot_room_join_per_s", int, 20, "joins per clock second admitted to one hot room (the waiting room's budget)", minimum=1, maximum=100_000),
    Setting("hot_room_fetch_per_s", float, 20.0, "storage reads/s of one hot room's history per node (after the window)", minimum=0.1, maximum=1e6),
    Setting("hot_room_fetch_burst", int, 20, "… saved up at most", minimum=1, maximum=1_000_000),
    Setting("hot_waiting_max_queue", int, 10_000, "users in one room's waiting line before joins are refused", minimum=1, maximum=10_000_000),
    Setting("hot_ticket_ttl_s", float, 30.0, "an admission ticket must be redeemed (the join repeated) within this", minimum=1, maximum=3600),
    Setting("hot_waiting_entry_ttl_s", float, 60.0, "a place in line not refreshed (join repeated) for this long lapses", minimum=1, maximum=3600),
    Setting("hot_window_messages", int, 1000, "recent messages of a hot room kept in memory for history reads", minimum=10, maximum=100_000),
    Setting("hot_window_bytes", int, 4 << 20, "… at most this many bytes of text per room", minimum=1024, maximum=1 << 30),
    # Bots (principal role `bot`): their own per-user send limit; their writes go to the bot lane.
    Setting("bot_send_per_s", float, 500.0, "messages/s one bot user may send on one node (instead of CHAT_USER_SEND_PER_S)", minimum=0.1, maximum=1e6),
    Setting("bot_send_burst", int, 1000, "… saved up at most", minimum=1, maximum=10_000_000),
]


# The relay's breaker recovers within a second of Redis answering again: a publish is cheap to
# try (the relay bounds it itself), and every message refused meanwhile is announced as a gap.
_RELAY_BREAKER = {"open_s": 0.5, "max_open_s": 1.0, "probes": 1}


def _from_dataclass(cls: type[Any], prefix: str, specs: Mapping[str, _Spec], defaults: Mapping[str, Value] | None = None) -> list[Setting]:
    out = []
    for f in fields(cls):
        minimum, maximum, doc = specs[f.name]
        default = (defaults or {}).get(f.name, f.default)
        assert default is not MISSING, f"{cls.__name__}.{f.name} needs a default"
        out.append(Setting(prefix + f.name, type(default), default, doc, minimum=minimum, maximum=maximum))
    return out


@dataclass(frozen=True, slots=True)
class HotValues:
    """The hot-room settings of one snapshot, as the pure modules take them."""

    thresholds: Thresholds
    cassandra_breaker: BreakerConfig
    redis_breaker: BreakerConfig
    lanes: LaneConfig
    batcher: BatcherConfig
    coalescer: CoalescerConfig
    flags: Mapping[str, Value]  # every other key, by name


_GROUPS: list[tuple[str, type[Any], str]] = [
    ("thresholds", Thresholds, ""),
    ("cassandra_breaker", BreakerConfig, "cassandra_breaker_"),
    ("redis_breaker", BreakerConfig, "redis_breaker_"),
    ("lanes", LaneConfig, "lane_"),
    ("batcher", BatcherConfig, "batch_"),
    ("coalescer", CoalescerConfig, "coalesce_"),
]


def values(snapshot: Mapping[str, Value]) -> HotValues:
    """The settings dataclasses of ``snapshot``; ValueError naming the group if one is inconsistent."""
    built: dict[str, Any] = {}
    for name, cls, prefix in _GROUPS:
        try:
            built[name] = from_settings(cls, snapshot, prefix)
        except ValueError as exc:
            raise ValueError(f"{prefix or 'hot_'}*: {exc}") from None
    return HotValues(**built, flags=snapshot)


def _check(snapshot: Mapping[str, Value]) -> list[str]:
    problems = []
    for _, cls, prefix in _GROUPS:
        try:
            from_settings(cls, snapshot, prefix)
        except ValueError as exc:
            problems.append(f"{prefix or 'hot_'}*: {exc}")
    return problems


SCHEMA = Schema(
    [
        *_from_dataclass(Thresholds, "", _THRESHOLDS),
        *_OWN,
        *_from_dataclass(BreakerConfig, "cassandra_breaker_", _BREAKER),
        *_from_dataclass(BreakerConfig, "redis_breaker_", _BREAKER, _RELAY_BREAKER),
        *_from_dataclass(LaneConfig, "lane_", _LANES),
        *_from_dataclass(BatcherConfig, "batch_", _BATCHER),
        *_from_dataclass(CoalescerConfig, "coalesce_", _COALESCER),
    ],
    check=_check,
)
