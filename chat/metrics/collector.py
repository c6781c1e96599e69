"""The node's Prometheus families, read from plain counters when scraped.

One :class:`ChatCollector` turns the counters the parts keep (:mod:`chat.metrics.counters`,
the presence tracker's stats, the sessions' outboxes, the registry view) into metric
families on each ``collect()``: the hot path never touches prometheus-client, and a scrape
costs one pass over the node's sockets (their outbox depths). It runs on the event loop, so
it reads every counter between two updates, never in the middle of one.

Labels are bounded by construction: ops, error codes and refusal reasons come from fixed sets
in the code, never from a channel, a user or anything a client sends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from chat import commands
from chat.metrics.counters import Histogram, HttpCounters, MessageCounters, WireCounters

if TYPE_CHECKING:
    from chat.metrics.looplag import LoopLag
    from chat.node import Node
    from chat.notify.notifier import Notifier
    from chat.ops_rooms import RoomProtection
    from discovery.registry.base import RegistryView
    from presence.tracker import TrackerStats

#: Every protocol error code (chat/errors.py), exported at 0 before its first refusal.
ERROR_CODES = ("bad_request", "unauthorized", "forbidden", "not_found", "too_large", "rate_limited", "throttled", "unavailable", "internal")
#: Server frame ops (docs/protocol.md), exported at 0 before their first frame.
SERVER_OPS = (
    "hello", "ack", "error", "subscribed", "unsubscribed", "history", "heartbeat_ack", "presence", "presence_unsubscribed",
    "read", "joined", "reconnect", "message", "typing", "resync",
)  # fmt: skip
#: A circuit breaker's states (chat/hot/breaker.py), each exported as 0 or 1.
BREAKER_STATES = ("healthy", "caution", "critical")
#: The op of each client command (what ``frames_in`` is keyed by), as the protocol names it.
COMMAND_OPS: Mapping[type, str] = {
    commands.Subscribe: "subscribe",
    commands.Unsubscribe: "unsubscribe",
    commands.Send: "send",
    commands.History: "history",
    commands.Heartbeat: "heartbeat",
    commands.Typing: "typing",
    commands.Read: "read",
    commands.PresenceQuery: "presence",
    commands.PresenceSubscribe: "presence_subscribe",
    commands.PresenceUnsubscribe: "presence_unsubscribe",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Sources:
    """Where the collector reads from (each read is cheap and never waits)."""

    node_id: str
    version: str
    capacity: int
    node: Node  # live sockets (their outboxes) and the draining flag
    view: Callable[[], RegistryView]  # the cluster as this node sees it
    wire: WireCounters
    messages: MessageCounters
    gaps_owed: Callable[[], int]
    gaps_announced: Callable[[], int]
    http: HttpCounters
    presence: Callable[[], TrackerStats]
    lag: LoopLag
    notifier: Notifier | None = None  # offline notifications (None: no webhook configured, no families)
    rooms: RoomProtection  # hot-room protection


class ChatCollector(Collector):
    """Every ``chat_*`` family (docs/operations.md lists them with what each means)."""

    def __init__(self, sources: Sources) -> None:
        self._s = sources

    def collect(self) -> Iterator[Metric]:
        yield from self._node()
        yield from self._sockets()
        yield from self._messages()
        yield from self._presence()
        yield from self._notifications()
        yield from self._hot_rooms()
        yield histogram("chat_event_loop_lag_seconds", "How late a timer due every 0.25 s fired: time the loop spent without yielding", self._s.lag.histogram)

    def _node(self) -> Iterator[Metric]:
        s = self._s
        info = GaugeMetricFamily("chat_node_info", "This node's ID and software version (always 1)", labels=["node_id", "version"])
        info.add_metric([s.node_id, s.version], 1)
        yield info
        yield GaugeMetricFamily("chat_node_capacity", "Connections this node is sized for (CHAT_NODE_CAPACITY)", value=s.capacity)
        yield GaugeMetricFamily("chat_node_draining", "1 while the node drains (SIGTERM), else 0", value=int(s.node.draining))
        view = s.view()
        yield GaugeMetricFamily("chat_cluster_nodes", "Nodes in this node's view of the cluster (itself included)", value=len(view.nodes))
        age = view.age(time.monotonic())
        yield GaugeMetricFamily("chat_registry_view_age_seconds", "How out of date this node's view of the cluster may be (0 while live)", value=age)

    def _sockets(self) -> Iterator[Metric]:
        s, wire = self._s, self._s.wire
        sessions = s.node.sessions
        yield GaugeMetricFamily("chat_ws_connections", "Open WebSocket connections", value=len(sessions))
        frames = size = 0
        for session in sessions:  # one pass per scrape: the queue depths are per socket
            frames += session.delivery.frames
            size += session.delivery.bytes
        yield GaugeMetricFamily("chat_ws_outbox_frames", "Frames queued to sockets and not yet written, all sockets together", value=frames)
        yield GaugeMetricFamily("chat_ws_outbox_bytes", "Bytes queued to sockets and not yet written, all sockets together", value=size)
        yield CounterMetricFamily("chat_ws_connections_opened", "WebSocket handshakes accepted", value=wire.connections_opened)
        yield labelled(CounterMetricFamily, "chat_ws_handshakes_refused", "WebSocket handshakes refused, by reason", "reason", wire.handshakes_refused)
        # Every op and code is exported from the start (at 0): a series that appears only with its
        # first event makes rate() and alerts miss that event.
        received = dict.fromkeys(COMMAND_OPS.values(), 0)
        received.update({COMMAND_OPS.get(kind, kind.__name__.lower()): n for kind, n in wire.frames_in.items()})
        received["unparsed"] = wire.unparsed
        yield labelled(
            CounterMetricFamily, "chat_ws_frames_in", "Client frames by op ('unparsed': refused by the rate limit, or not a valid frame)", "op", received
        )
        sent = {**dict.fromkeys(SERVER_OPS, 0), **wire.frames_out}
        for op, n in (("message", wire.deliveries + wire.replayed), ("typing", wire.ephemeral), ("presence", wire.presence_pushes), ("resync", wire.resyncs)):
            sent[op] = sent.get(op, 0) + n
        yield labelled(CounterMetricFamily, "chat_ws_frames_out", "Server frames queued to sockets, by op", "op", {op or "other": n for op, n in sent.items()})
        yield CounterMetricFamily("chat_fanout_deliveries", "Live messages queued to local sockets (fan-out)", value=wire.deliveries)
        yield CounterMetricFamily("chat_resyncs", "resync frames queued (a slow socket, messages lost by the relay, a capped replay)", value=wire.resyncs)
        errors = CounterMetricFamily("chat_errors", "Requests refused, by transport and protocol error code", labels=["transport", "code"])
        for transport, by_code in (("ws", wire.errors), ("http", s.http.errors)):
            for code, n in sorted({**dict.fromkeys(ERROR_CODES, 0), **by_code}.items()):
                errors.add_metric([transport, code], n)
        yield errors

    def _messages(self) -> Iterator[Metric]:
        s, m = self._s, self._s.messages
        yield CounterMetricFamily("chat_messages_stored", "Messages stored (idempotent retries not counted)", value=m.stored)
        yield CounterMetricFamily("chat_messages_deduplicated", "Sends answered with the message stored under their client_msg_id", value=m.deduplicated)
        yield histogram("chat_send_ack_seconds", "Send → ack: from a send entering the message path to its ack (stored, handed to the relay)", m.send_seconds)
        yield histogram("chat_store_write_seconds", "One message store write", m.store_seconds)
        yield histogram("chat_relay_publish_seconds", "Stored → the relay confirmed its publish (after the channel's earlier messages)", m.publish_seconds)
        yield CounterMetricFamily("chat_relay_publish_failures", "Stored messages the relay did not take (each owes a gap notice)", value=m.publish_failures)
        yield GaugeMetricFamily("chat_relay_gaps_owed", "Channels with a stored, unpublished message whose gap is not announced yet", value=s.gaps_owed())
        yield CounterMetricFamily("chat_relay_gaps_announced", "Gap announcements published (subscribers resync from the store)", value=s.gaps_announced())

    def _presence(self) -> Iterator[Metric]:
        stats = self._s.presence()
        yield CounterMetricFamily("chat_presence_transitions", "Presence transitions (online ↔ offline) this node caused", value=stats.transitions)
        yield GaugeMetricFamily("chat_presence_pending", "Presence events waiting to be written to the presence store", value=stats.pending)
        yield CounterMetricFamily("chat_presence_flushes", "Presence store writes (one round trip each)", value=stats.flushes)
        yield CounterMetricFamily("chat_presence_flush_failures", "Presence store writes that failed (retried)", value=stats.failed_flushes)
        yield CounterMetricFamily("chat_presence_dropped", "Presence events dropped because too many were waiting", value=stats.dropped)

    def _notifications(self) -> Iterator[Metric]:
        notifier = self._s.notifier
        if notifier is None:
            return
        enqueuer, deliverer = notifier.enqueuer, notifier.deliverer
        yield CounterMetricFamily("chat_notify_enqueued", "Offline notifications put in the outbox", value=enqueuer.enqueued)
        yield CounterMetricFamily("chat_notify_dropped", "Stored messages never checked for notifications (queue full or closing)", value=enqueuer.dropped)
        yield CounterMetricFamily("chat_notify_delivered", "Notifications the webhook accepted (2xx), sent by this node", value=deliverer.delivered)
        yield CounterMetricFamily("chat_notify_given_up", "Notifications dropped after their last attempt or past their age", value=deliverer.given_up)

    def _hot_rooms(self) -> Iterator[Metric]:
        rooms = self._s.rooms
        views = rooms.snapshot()  # rooms, not labels: counted here, listed by /v1/ops/hot-rooms
        watched = GaugeMetricFamily(
            "chat_hot_rooms",
            "Rooms hot-room protection watches (above a local floor, reported, pinned), those protected now (hot),"
            " and those that refused something in the last 10 s (throttled)",
            labels=["state"],
        )
        watched.add_metric(["watched"], len(views))
        watched.add_metric(["hot"], sum(1 for v in views if v.hot))
        watched.add_metric(["throttled"], sum(1 for v in views if v.throttled))
        yield watched
        yield GaugeMetricFamily("chat_hot_rooms_pinned", "Rooms an operator pinned on or off", value=sum(1 for v in views if v.pinned is not None))
        # A fixed set of names (the fields of chat.protect's Counters): refusals, batches, windows, joins.
        yield labelled(CounterMetricFamily, "chat_hot_events", "Hot-room protection's events on this node, by kind", "event", rooms.counters())
        queued = "Storage writes waiting now: per lane, and hot rooms' messages queued or being written in batches (hot_batches)"
        yield labelled(GaugeMetricFamily, "chat_storage_queue", queued, "queue", rooms.queues())
        states = GaugeMetricFamily("chat_breaker_state", "Circuit breaker of each guarded backend: 1 for its current state", labels=["breaker", "state"])
        for name, current in sorted(rooms.health().items()):
            for state in BREAKER_STATES:
                states.add_metric([name, state], int(state == current))
        yield states
        refused = "Requests a circuit breaker refused at once (failing fast) instead of sending them"
        yield labelled(CounterMetricFamily, "chat_breaker_refused", refused, "breaker", rooms.refusals())


def registry(sources: Sources) -> CollectorRegistry:
    """The node's own registry (never prometheus-client's global one): the ``chat_*`` families,
    and the process's (CPU, memory, open file descriptors) and Python's (version) figures."""
    out = CollectorRegistry()
    ProcessCollector(registry=out)
    PlatformCollector(registry=out)
    out.register(ChatCollector(sources))
    return out


def labelled(kind: type[CounterMetricFamily] | type[GaugeMetricFamily], name: str, doc: str, label: str, values: Mapping[str, int]) -> Metric:
    """A family with one sample per ``values`` item, labelled ``label``."""
    family = kind(name, doc, labels=[label])
    for key, n in sorted(values.items()):
        family.add_metric([key], n)
    return family


def histogram(name: str, doc: str, hist: Histogram) -> HistogramMetricFamily:
    """A :class:`Histogram` of plain ints as a Prometheus histogram family."""
    buckets = hist.cumulative()
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=hist.sum)
