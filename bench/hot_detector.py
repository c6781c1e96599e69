"""What counting costs the message path: ``HotDetector.count`` per event, one thread.

    .venv/bin/python -m bench.hot_detector [--rounds 7] [--rooms 100000] [--events 1000000]

Three loops over pre-built event lists, each timed per round (median of rounds):

* ``quiet``: ``--rooms`` rooms visited in turn, the clock advancing so that every event of a room
  falls in a new bucket — each event rolls its room's counters (the worst case for a quiet room);
* ``busy``: one room, every event in the current bucket (the hot room's path);
* ``baseline``: the same loop calling a no-op method with the same arguments (the loop and the
  call, which the caller pays anyway).

Reported: nanoseconds per event of each, and each minus the baseline (what the detector adds).
The first pass over the quiet rooms allocates their counters and is timed apart (``first``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

from bench.harness.measure import headline, parse_args, report, verdict
from chat.hot.detector import SEND, HotDetector

TARGET_NS = 1000  # what one event may add: well under the ~100 µs a send costs the node


class _Noop:
    def count(self, room: int, kind: int, now: float, n: int = 1) -> None:
        pass


def timed(count: Callable[[int, int, float], None], events: Sequence[tuple[int, float]]) -> float:
    """Nanoseconds per event of ``count`` over ``events``."""
    t0 = time.perf_counter()
    for room, now in events:
        count(room, SEND, now)
    return (time.perf_counter() - t0) / len(events) * 1e9


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--rooms", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parse_args(parser, argv, name="hot_detector", quick={"rounds": 3, "events": 200_000})

    # Quiet: room i's k-th event at second k × 2 (+ a fraction): never two events in one bucket.
    quiet = [(i % args.rooms, 2.0 * (i // args.rooms) + (i % args.rooms) / args.rooms) for i in range(args.events)]
    busy = [(7, 1000.0 + i * 1e-7) for i in range(args.events)]  # 0.1 s in all: one bucket
    detector = HotDetector(now=0.0, max_rooms=2 * args.rooms, idle_s=1e9)
    first = timed(detector.count, quiet[: args.rooms])
    rounds: dict[str, list[float]] = {"quiet": [], "busy": [], "baseline": []}
    for r in range(args.rounds):
        shift = 2.0 * (args.events // args.rooms + 1) * (r + 1)  # later seconds: still a new bucket each
        rounds["quiet"].append(timed(detector.count, [(room, now + shift) for room, now in quiet]))
        rounds["busy"].append(timed(HotDetector(now=0.0).count, busy))
        rounds["baseline"].append(timed(_Noop().count, quiet))
    median = {name: statistics.median(values) for name, values in rounds.items()}
    added = {name: median[name] - median["baseline"] for name in ("quiet", "busy")}
    result = {
        "params": vars(args),
        "ns_per_event_median": {name: round(value, 1) for name, value in median.items()},
        "ns_added_median": {name: round(value, 1) for name, value in added.items()},
        "ns_first_event_of_a_room": round(first, 1),
        "ns_per_event_rounds": {name: [round(v, 1) for v in values] for name, values in rounds.items()},
        "tracked_rooms": detector.tracked,
        "target_ns_added": TARGET_NS,
        "verdict": verdict(added["quiet"], TARGET_NS, higher_is_better=False),
        "headline": headline(quiet_ns=(round(median["quiet"], 1), "lower"), busy_ns=(round(median["busy"], 1), "lower")),
    }
    line = (
        f"count() quiet room {median['quiet']:.0f} ns/event, busy room {median['busy']:.0f} ns, no-op call {median['baseline']:.0f} ns "
        f"(adds {added['quiet']:.0f} / {added['busy']:.0f} ns); a room's first event {first:.0f} ns; {detector.tracked} rooms tracked"
    )
    report(args.name, result, line=line, target=f"adds <= {TARGET_NS} ns")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
