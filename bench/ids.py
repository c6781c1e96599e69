"""Snowflake IDs per second in one thread: ``SnowflakeGenerator.next_id`` in a tight loop.

    .venv/bin/python -m bench.ids [--rounds 7] [--per-round 2000000]

Each round mints ``--per-round`` IDs; the result is the median rate over the rounds. A
``ClockBehind`` (4,096 IDs used up in one millisecond) is caught and retried as the server would
after waiting, so the loop measures the real generator including those stalls: above ~4.1 M/s
the sequence space, not the code, would be the limit.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

from bench.harness.measure import headline, parse_args, report, verdict
from chat.ids import ClockBehind, SnowflakeGenerator

TARGET = 1_000_000


def one_round(n: int) -> tuple[float, int, bool]:
    """IDs per second over ``n`` IDs, ``ClockBehind`` retries, and whether IDs strictly increased."""
    next_id = SnowflakeGenerator(1).next_id
    stalls, last, increasing, i = 0, 0, True, 0
    t0 = time.perf_counter()
    while i < n:
        try:
            v = next_id()
        except ClockBehind:
            stalls += 1
            continue
        i += 1
        increasing = increasing and v > last
        last = v
    return n / (time.perf_counter() - t0), stalls, increasing


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--per-round", type=int, default=2_000_000)
    args = parse_args(parser, argv, name="ids", quick={"rounds": 3, "per_round": 200_000})

    one_round(100_000)  # warm-up
    rounds = [one_round(args.per_round) for _ in range(args.rounds)]
    rates = [r for r, _, _ in rounds]
    stalls = sum(s for _, s, _ in rounds)
    ok = all(inc for _, _, inc in rounds)
    median = statistics.median(rates)
    result = {
        "params": vars(args),
        "ids_per_s_median": round(median),
        "ids_per_s_rounds": [round(r) for r in rates],
        "clock_behind_retries": stalls,
        "strictly_increasing": ok,
        "target_ids_per_s": TARGET,
        "verdict": verdict(median, TARGET, higher_is_better=True),
        "headline": headline(ids_per_s=(round(median), "higher")),
        "note": "4,096 IDs per millisecond per worker cap one generator at 4.096 M/s",
    }
    line = (
        f"{median / 1e6:.2f} M IDs/s median of {args.rounds} rounds (min {min(rates) / 1e6:.2f}, max {max(rates) / 1e6:.2f}; "
        f"{stalls} sequence-exhausted retries; strictly increasing: {ok})"
    )
    report(args.name, result, line=line, target=f">= {TARGET / 1e6:.1f} M/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
