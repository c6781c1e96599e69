"""Process-level variants of ``chat serve`` for the cluster benchmarks (benchmarks only).

    .venv/bin/python -m bench.cassandra_variants --patch gclog   # = chat serve, with the patch

Nothing in ``chat/`` imports this. The prototypes first measured here — ``handoff`` and
``nowaitfor`` (the driver→loop hand-off of the Cassandra adapter) and ``pubpipe`` (one pipelined
Redis connection for ``PUBLISH``) — are built into ``chat/`` now; BENCHMARKS.md keeps their
before/after figures. What is left:

* ``switch1ms``: ``sys.setswitchinterval(0.001)`` (default 5 ms): how long a thread that wants
  the GIL (the driver's I/O thread) waits for the running one (the event loop) to drop it.
* ``gclog`` (diagnostic, no behaviour change): logs every Python garbage collection of the node
  that takes longer than 2 ms (generation, duration, objects collected), to see whether the
  node's own GC explains latency stalls.
* ``gcfreeze``: ``gc.freeze()`` once the store is open and gen-0 threshold 50,000 (default 700),
  meant to make collections rarer and cheaper. Measured worse (cross_node at 500/s: 18–19
  collections over 2 ms per run instead of 11, same worst case): kept as a negative result.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

PATCHES = ("switch1ms", "gclog", "gcfreeze")
# Prototypes measured here and since built into chat/ (BENCHMARKS.md has their figures).
BUILT_IN = {"handoff": "chat/store/cassandra.py (_Mailbox)", "nowaitfor": "chat/store/cassandra.py (_request)", "pubpipe": "chat/relay/redis_publisher.py"}


def _patch_gclog() -> None:
    import gc
    import logging
    import time

    log = logging.getLogger("bench.gc")
    started: list[float] = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            ms = (time.perf_counter() - started[0]) * 1000
            if ms > 2:
                log.warning("python gc gen%d took %.1f ms (collected %d)", info.get("generation", -1), ms, info.get("collected", 0))

    gc.callbacks.append(callback)


def _patch_gcfreeze() -> None:
    import gc

    from chat.store.cassandra import CassandraMessageStore

    original = CassandraMessageStore.open

    async def open_then_freeze(self: Any) -> None:
        await original(self)
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)

    CassandraMessageStore.open = open_then_freeze  # type: ignore[method-assign]


def apply(patches: Sequence[str]) -> None:

    built_in = [p for p in patches if p in BUILT_IN]
    if built_in:
        raise SystemExit("; ".join(f"--patch {p} is built in now: {BUILT_IN[p]}" for p in built_in))
    unknown = set(patches) - set(PATCHES)
    if unknown:
        raise SystemExit(f"unknown patch(es) {sorted(unknown)}; choose from {PATCHES}")
    if "switch1ms" in patches:
        sys.setswitchinterval(0.001)
    if "gclog" in patches:
        _patch_gclog()
    if "gcfreeze" in patches:
        _patch_gcfreeze()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patch", action="append", default=[], choices=PATCHES)
    args = parser.parse_args(argv)
    apply(args.patch)
    from chat.__main__ import main as chat_main

    return chat_main(["serve"])


if __name__ == "__main__":
    sys.exit(main())
