"""Plain integer counters of hot-room protection, totals since the node started (the metrics
issue exports them; tests read them). Bumped on the loop only: no locks."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(slots=True)
class Counters:
    # Detection
    rooms_heated: int = 0  # transitions to hot (rates or pin)
    rooms_cooled: int = 0
    reports_sent: int = 0  # rate reports published to the other nodes
    reports_received: int = 0
    # Refusals before anything is stored
    sends_throttled: int = 0  # a hot room's send limit (throttled)
    sends_shielded: int = 0  # the store's breaker is CRITICAL (unavailable, no request made)
    bot_sends_limited: int = 0  # a bot over bot_send_per_s (rate_limited)
    lane_refused: int = 0  # a storage lane was full
    batch_refused: int = 0  # a hot room's write queue was full or too old (throttled)
    # Lanes and batches
    lane_waits: int = 0  # writes that waited for their lane
    batches_written: int = 0
    batched_messages: int = 0  # messages in those batches
    batch_failures: int = 0  # batches whose write failed (every sender got unavailable)
    orphans: int = 0  # batched messages stored after their sender stopped waiting (announced as gaps)
    # Fan-out
    coalesced_messages: int = 0  # live messages delivered inside batch frames
    batch_frames: int = 0  # batch frames built (each encoded once for all local sockets)
    typing_suppressed: int = 0
    presence_suppressed: int = 0
    # History
    window_hits: int = 0  # hot-room history pages answered from memory
    window_misses: int = 0
    reads_coalesced: int = 0  # reads that shared an identical read already under way
    fetches_throttled: int = 0  # a hot room's store-read limit (throttled)
    # Joins
    joins_admitted: int = 0  # joins to a protected room let in (at once or with a ticket)
    joins_queued: int = 0  # answered with a place in line
    joins_refused: int = 0  # line full, or over the join limit (waiting room off)
    admissions: int = 0  # tickets handed out from the head of a line

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
