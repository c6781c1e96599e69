"""Plain counters of the node, bumped on the event loop and read at scrape time (pure).

The hot path only adds to ``int`` attributes (and, once per request rather than per delivery,
to a small dict keyed by op or error code): no lock, no label lookup, no allocation. The
collector (:mod:`chat.metrics.collector`) turns these into Prometheus families when scraped.
Everything runs on the one event-loop thread, so no update is ever torn.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

#: Seconds; the send→ack and store-write histograms (a SQLite commit is ~1-5 ms, Cassandra
#: LOCAL_QUORUM a few ms; above a second something is wrong).
LATENCY_BUCKETS_S: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Why a WebSocket handshake was refused (chat.ws): the metrics label, a fixed set.
HANDSHAKE_REFUSALS: tuple[str, ...] = ("address_rate", "unauthorized", "draining", "user_sockets")
#: Seconds; event-loop lag (a healthy loop is late by well under a millisecond).
LAG_BUCKETS_S: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Histogram:
    """A fixed-bucket histogram of plain ints: :meth:`observe` is one bisect and two adds.

    ``counts[i]`` holds observations ``<= bounds[i]`` and above the bound before it; the last
    slot holds those above every bound (``+Inf``). Exported cumulatively (Prometheus ``le``).
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError("bounds must be distinct and ascending")
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, observations <= le)`` for every bound and ``+Inf``, as Prometheus writes them."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip((*map(repr, self.bounds), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


@dataclass(slots=True)
class WireCounters:
    """What this node's sockets did, since the node started (shared by every session)."""

    # Handshakes
    connections_opened: int = 0  # sockets accepted
    handshakes_refused: dict[str, int] = field(default_factory=lambda: dict.fromkeys(HANDSHAKE_REFUSALS, 0))  # reason → refusals
    # Client frames by command type (the collector names the op); frames refused before they
    # were parsed (rate limit, flood) or that did not parse count as "unparsed".
    frames_in: dict[type, int] = field(default_factory=dict)
    unparsed: int = 0
    # Server frames queued to sockets. Per request (replies, acks, errors, control): by op.
    frames_out: dict[str, int] = field(default_factory=dict)
    # Per delivery (the fan-out): plain ints.
    deliveries: int = 0  # live messages queued to local sockets
    replayed: int = 0  # stored messages replayed on subscribe + since
    ephemeral: int = 0  # typing
    presence_pushes: int = 0  # presence transitions pushed to watchers
    resyncs: int = 0  # resync frames queued (slow reader, relay gap, replay cap)
    # Error frames sent, by protocol code (rate_limited, throttled, forbidden …).
    errors: dict[str, int] = field(default_factory=dict)

    # Per request, not per delivery: a dict update is fine here.

    def received(self, command: type) -> None:
        """A client frame parsed into a ``command`` of this type."""
        self.frames_in[command] = self.frames_in.get(command, 0) + 1

    def sent(self, op: str) -> None:
        """A reply, ack, error or control frame queued to a socket."""
        self.frames_out[op] = self.frames_out.get(op, 0) + 1

    def refused(self, code: str) -> None:
        """An error frame with this protocol code queued to a socket."""
        self.errors[code] = self.errors.get(code, 0) + 1

    def counting_resyncs(self, make: Callable[[int], T]) -> Callable[[int], T]:
        """``make`` (the resync-frame factory a socket's Delivery calls), counting each resync:
        every one costs its client a store read, so their rate is worth watching."""

        def counted(channel: int) -> T:
            self.resyncs += 1
            return make(channel)

        return counted


@dataclass(slots=True)
class MessageCounters:
    """The message path's counts and latencies, since the node started."""

    stored: int = 0  # messages stored (new ones; an idempotent retry is not counted here)
    deduplicated: int = 0  # sends answered with the message an earlier send stored
    publish_failures: int = 0  # stored messages the relay did not take (each owes a gap announcement)
    send_seconds: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))  # send → ack
    store_seconds: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))  # one store write
    # Stored → the relay confirmed the publish (includes waiting for the channel's earlier
    # messages: publishing is in ID order per channel).
    publish_seconds: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))


@dataclass(slots=True)
class HttpCounters:
    """HTTP error responses by protocol code (the API's refusals, rate limits included)."""

    errors: dict[str, int] = field(default_factory=dict)

    def count(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1
