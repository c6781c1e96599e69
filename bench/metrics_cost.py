"""What the metrics' counting costs one fan-out delivery, on the node's own path.

    .venv/bin/python -m bench.metrics_cost [--rounds 41] [--sockets 1000] [--messages 20]

One process builds ``--sockets`` sessions subscribed to one channel, each on a socket whose write
is a no-op, and times what the hub does for a live message: one shared ``Frame`` handed to every
session's ``deliver_message``, then every session's ``write_now`` (the flusher's write). Two
variants run interleaved, round after round: the sessions as they are (``counted``), and the same
sessions with ``deliver_message`` as it was before the metrics (``uncounted``: the one add per
delivery taken out — the only counting on this path). Each variant's best round is its figure:
noise on a shared machine only ever adds time, and alternating short rounds exposes both variants
to the same drift.

No kernel write, no loop wake-up and no relay are in it, so the path measured is a fraction of a
real delivery (bench.fanout: 11–27 µs of node CPU per delivery): the share reported is an upper
bound of what counting adds to a delivery. ``bench.compare --base main --head HEAD "fanout
--scrape-s 1"`` measures the whole node, scrapes included, when the machine is quiet enough.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence

from bench.harness.measure import headline, parse_args, report, verdict
from chat import protocol
from chat.models import Principal
from chat.protocol import Frame
from chat.session import Session, SessionLimits

TARGET_PCT = 3.0  # the metrics may cost at most this much of a delivery (issue 10)
CHANNEL = 7


class _Socket:
    """A direct socket that takes every write at once."""

    paused = False
    peer_code = None

    def attach(self, sink: object) -> None:
        pass

    def write(self, data: bytes) -> bool:
        return True


class _Flusher:
    def mark(self, session: object) -> None:
        pass


class _Uncounted(Session):
    """``deliver_message`` as it was before the metrics counted deliveries."""

    def deliver_message(self, channel: int, message_id: int, frame: Frame) -> None:
        if self.delivery.live(channel, message_id, frame):
            self._kick()


async def _handler(session: Session, command: object) -> None:
    pass


def _sessions(kind: type[Session], count: int) -> list[Session]:
    limits = SessionLimits(
        max_message_chars=100_000, queue_frames=1024, queue_bytes=8 << 20, rate_per_s=50.0, rate_burst=200, flood_strikes=100, oversize_strikes=3
    )
    out = [kind(None, Principal(user=f"u{i}"), limits=limits, handler=_handler, direct=_Socket(), flusher=_Flusher()) for i in range(count)]  # type: ignore[arg-type]
    for session in out:
        session.delivery.open(CHANNEL)
        session.finish(CHANNEL, after=None, upper=None, last=None, complete=True)
    return out


def _round(sessions: list[Session], payload: bytes, first_id: int, messages: int) -> float:
    """Seconds for ``messages`` live messages to every session, delivered and written."""
    started = time.perf_counter()
    for message_id in range(first_id, first_id + messages):
        frame = Frame(payload, "message")
        for session in sessions:
            session.deliver_message(CHANNEL, message_id, frame)
        for session in sessions:
            session.write_now()
    return time.perf_counter() - started


async def measure(rounds: int, sockets: int, messages: int) -> dict[str, list[float]]:
    payload = protocol.encode("message", {"message": {"id": "1", "channel": str(CHANNEL), "sender": "a", "text": "x" * 100, "ts": 1, "client_msg_id": "c"}})
    variants = {"counted": _sessions(Session, sockets), "uncounted": _sessions(_Uncounted, sockets)}
    ns: dict[str, list[float]] = {name: [] for name in variants}
    next_id = 1
    for r in range(rounds + 1):  # the first round warms both up and is not counted
        for name, sessions in variants.items() if r % 2 else reversed(variants.items()):
            elapsed = _round(sessions, payload, next_id, messages)
            if r:
                ns[name].append(elapsed / (sockets * messages) * 1e9)
        next_id += messages
    return ns


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=20, help="live messages per round (each to every socket)")
    args = parse_args(parser, argv, name="metrics_cost", quick={"rounds": 5})
    ns = asyncio.run(measure(args.rounds, args.sockets, args.messages))
    counted, uncounted = min(ns["counted"]), min(ns["uncounted"])
    added_pct = (counted - uncounted) / uncounted * 100
    result = {
        "parameters": vars(args),
        "ns_per_delivery": ns,
        "headline": headline(counted_ns=(counted, "lower"), uncounted_ns=(uncounted, "lower"), added_pct=(added_pct, "lower")),
        "verdict": verdict(added_pct, TARGET_PCT, higher_is_better=False),
    }
    line = (
        f"fan-out path {counted:.0f} ns per delivery counted, {uncounted:.0f} ns uncounted: {added_pct:+.1f} % "
        f"(best of {args.rounds} interleaved rounds of {args.sockets:,} sockets × {args.messages} messages; no kernel write, so an upper bound)"
    )
    report(args.name, result, line=line, target=f"<= +{TARGET_PCT:g} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
