"""Offering load: open-loop schedules, closed-loop drivers, and the bookkeeping of a send run
(send→ack and send→delivery latency, every delivery exactly once)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench.harness.measure import Histogram
from bench.harness.wire import Peer, json_frame


async def open_loop(
    rate: float, n: int, send: Callable[[int, float, float], None], *, mark: int = -1, on_mark: Callable[[], None] | None = None
) -> None:
    """Call ``send(i, due, now)`` for ``i`` in ``range(n)``, message ``i`` being due at
    ``t0 + i / rate``, as soon as the loop reaches that time. The schedule never waits for
    replies, and callers measure latency from ``due``: a node that stalls shows its stall in
    full instead of slowing the sender down (no coordinated omission). ``on_mark()`` runs once,
    just before message ``mark`` goes out: the start of the measured window."""
    interval = 1.0 / rate
    t0 = time.monotonic() + 0.05
    i = 0
    while i < n:
        delay = t0 + i * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.monotonic()
        while i < n and t0 + i * interval <= now:
            if i == mark and on_mark is not None:
                on_mark()
            send(i, t0 + i * interval, now)
            i += 1


@dataclass
class ClosedLoop:
    """What :func:`closed_loop` measured."""

    latency: Histogram
    elapsed_s: float
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    @property
    def ops_per_s(self) -> float:
        return self.latency.count / self.elapsed_s if self.elapsed_s else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "ops_per_s": round(self.ops_per_s, 1),
            "latency": self.latency.summary(),
            "errors": self.errors,
            "error_samples": self.error_samples,
        }


async def closed_loop(op: Callable[[int], Awaitable[object]], concurrency: int, duration_s: float) -> ClosedLoop:
    """``concurrency`` coroutines calling ``op(i)`` back to back for ``duration_s`` (a capacity
    measurement: each waits for its reply before the next call)."""
    out = ClosedLoop(Histogram(), 0.0)
    deadline = time.monotonic() + duration_s
    counter = iter(range(1 << 62))

    async def worker() -> None:
        while (t := time.monotonic()) < deadline:
            try:
                await op(next(counter))
            except Exception as exc:  # noqa: BLE001 - counted, the run goes on
                out.errors += 1
                if len(out.error_samples) < 3:
                    out.error_samples.append(f"{type(exc).__name__}: {exc}")
                continue
            out.latency.record(time.monotonic() - t)

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    out.elapsed_s = time.monotonic() - t0
    return out


class SendRun:
    """An open-loop send run: message ``i`` goes out as ``send`` with ``id`` ``i`` and
    ``client_msg_id`` ``<tag><i>`` on sender ``i % senders``; acks are matched by ``id``,
    deliveries by ``client_msg_id``. Latency runs from the scheduled time; the first ``warmup_s``
    worth of messages is not recorded. Each message must reach ``receivers`` sockets exactly once."""

    def __init__(self, rate: float, warmup_s: float, duration_s: float, *, receivers: int, tag: str = "m") -> None:
        self.rate, self.duration_s, self.expect, self.tag = rate, duration_s, receivers, tag
        self.key = b'"client_msg_id":"' + tag.encode()  # where a delivery's index starts
        self.n_warm = int(rate * warmup_s)
        self.n_total = self.n_warm + int(rate * duration_s)
        self.sched = [0.0] * self.n_total
        self.acked = bytearray(self.n_total)
        self.got = bytearray(self.n_total)
        self.ack, self.delivery, self.send_lag = Histogram(), Histogram(), Histogram()
        self.errors: list[dict[str, Any]] = []
        self.resyncs = self.duplicates = self.n_acked = self.n_delivered = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.t_measure = 0.0
        # Worst delivery per 100 ms of scheduled time: lines stalls up with e.g. GC pauses.
        self.worst_per_100ms: dict[int, float] = {}

    def on_sender_frame(self, payload: bytes, now: float) -> None:
        """Frames of a sending socket: acks (and errors, resyncs)."""
        if payload.startswith(b'{"op":"ack"'):
            i = orjson.loads(payload).get("id")
            if isinstance(i, int) and 0 <= i < self.n_total and not self.acked[i]:
                self.acked[i] = 1
                self.n_acked += 1
                if i >= self.n_warm:
                    self.ack.record(now - self.sched[i])
                self._check_done()
        else:
            self._other(payload)

    def on_receiver_frame(self, payload: bytes, now: float) -> None:
        """Frames of a receiving socket: deliveries, one or a batch (and errors, resyncs)."""
        if payload.startswith(b'{"op":"message",'):
            k = payload.rfind(self.key)
            if k >= 0:
                k += len(self.key)
                self._delivered(int(payload[k : payload.find(b'"', k)]), now)
        elif payload.startswith(b'{"op":"messages",'):
            for m in orjson.loads(payload)["messages"]:
                if m["client_msg_id"].startswith(self.tag):
                    self._delivered(int(m["client_msg_id"][len(self.tag) :]), now)
        else:
            self._other(payload)

    def _delivered(self, i: int, now: float) -> None:
        if not 0 <= i < self.n_total:
            return
        if self.got[i] >= self.expect:
            self.duplicates += 1
            return
        self.got[i] += 1
        self.n_delivered += 1
        if i >= self.n_warm:
            lat = now - self.sched[i]
            self.delivery.record(lat)
            slot = int((self.sched[i] - self.t_measure) * 10)
            self.worst_per_100ms[slot] = max(self.worst_per_100ms.get(slot, 0.0), round(lat * 1000, 1))
        self._check_done()

    def _other(self, payload: bytes) -> None:
        if payload.startswith(b'{"op":"error"'):
            self.errors.append(orjson.loads(payload))
        elif payload.startswith(b'{"op":"resync"'):
            self.resyncs += 1

    def _check_done(self) -> None:
        if self.n_acked == self.n_total and self.n_delivered >= self.n_total * self.expect and not self.done.done():
            self.done.set_result(None)

    async def send_all(self, senders: Sequence[tuple[Peer, str]], text: str, on_window: Callable[[], None]) -> None:
        """Send every message on schedule (``senders``: socket and channel pairs); ``on_window()``
        runs as the measured window starts. Returns after the last send, not the last reply."""

        def send(i: int, due: float, now: float) -> None:
            peer, channel = senders[i % len(senders)]
            self.sched[i] = due
            if i == self.n_warm:
                self.t_measure = due
            peer.send(json_frame({"op": "send", "id": i, "channel": channel, "text": text, "client_msg_id": f"{self.tag}{i}"}))
            if i >= self.n_warm:
                self.send_lag.record(now - due)

        await open_loop(self.rate, self.n_total, send, mark=self.n_warm, on_mark=on_window)

    async def finish(self, timeout_s: float) -> None:
        """Wait (bounded) for every ack and delivery."""
        await asyncio.wait([self.done], timeout=timeout_s)

    def summary(self, *, worst_over_ms: float = 25.0) -> dict[str, Any]:
        """Counts and latencies; the worst delivery per 100 ms only where it exceeded ``worst_over_ms``."""
        ack = self.ack.summary()
        return {
            "sent": self.n_total,
            "acked": self.n_acked,
            "achieved_acks_per_s": round(ack["count"] / self.duration_s, 1),
            "ack_latency": ack,
            "delivery_latency": self.delivery.summary(),
            "client_send_lag": self.send_lag.summary(),
            "deliveries": self.n_delivered,
            "missing_deliveries": self.n_total * self.expect - self.n_delivered,
            "duplicate_deliveries": self.duplicates,
            "errors": len(self.errors),
            "error_samples": self.errors[:5],
            "resyncs": self.resyncs,
            "worst_delivery_ms_per_100ms": {f"{k / 10:.1f}": v for k, v in sorted(self.worst_per_100ms.items()) if v > worst_over_ms},
        }

    @property
    def complete(self) -> bool:
        """Every message acked and delivered to every receiver exactly once."""
        return self.n_acked == self.n_total and self.n_delivered == self.n_total * self.expect and not self.duplicates
