"""What one socket is sent, and when: per-socket delivery state, pure (events in, frames out).

One :class:`Delivery` per WebSocket. The gateway feeds it events — a live message of a
channel, a replayed one, a relay gap, a kick, a reply — and it queues frames in the socket's
outbox or decides to drop them; the socket's writer takes the frames and reports them
written. Nothing here awaits, so every rule below is tested without sockets or an event loop.

**Outbox bounds.** Frames queued, or taken by the writer and not yet written, count against
the socket's bounds, in frames *and* bytes (a single message may be 600 kB on the wire):

* *Live* frames (messages, typing) respect ``max_frames``/``max_bytes``. A message that would
  cross them is dropped **for its channel** and the channel is owed a ``resync``; live
  delivery of that channel pauses until the ``resync`` is queued, which happens as soon as the
  outbox has drained to half of both bounds. The client then recovers from the store.
* *Control* frames (replies, acks, errors, read markers) are never dropped: the client's own
  requests bound them. But a client that keeps asking without reading would grow the outbox
  without bound, so once ``hard_frames``/``hard_bytes`` are already queued, :meth:`control`
  refuses and the socket must be closed (slow consumer).

**The subscribe seam.** ``subscribe`` with ``since`` means "every stored message after it, then
live, no gap, no duplicate". :meth:`open` marks the channel *replaying*: live messages of it
are held back in ``pending`` (bounded: overflow is a gap). The gateway replays the store
through :meth:`replayed` — which skips what this socket already got — and ends with
:meth:`finish`, which releases the held-back messages above the seam's floor and not replayed.
The floor is ``max(since, upper)``: ``upper`` is the bound up to which the replay read, when
the relay can give one (every ID ≤ ``upper`` is stored, every ID above arrives live). Without
it (other nodes publish too) the seam is de-duplicated by ID alone, and not only while the
replay runs: another node may publish a message a moment after storing it, so a message the
replay read can still arrive live after the seam. The replayed IDs are therefore kept until
live traffic has moved :data:`LATE_WINDOW_MS` of ID time past the newest of them.

Each stream also remembers the contiguous ID range ``[lo, hi]`` it has delivered, so a
re-subscribe with an older ``since`` (after a ``resync``) does not send a message twice.

**Batches.** A hot room's live messages may come as one :class:`~chat.protocol.BatchFrame`
(``messages``, ascending by ID, encoded once for the room): :meth:`Delivery.live` takes it as
one frame against the bounds — whole or, if it does not fit, dropped with the rest of the
channel until the ``resync``, like any live message. A stream in its subscribe seam, or with
late copies of replayed messages still to drop, gets the batch's messages one by one instead,
through the rules above, so the seam stays exact.
"""

from __future__ import annotations

from collections.abc import Callable

from chat.ids import TIMESTAMP_SHIFT
from chat.protocol import BatchFrame, Frame

#: Presence transitions remembered per socket, to pass each one on once.
PRESENCE_SEEN = 512
#: How long after storing a message another node may still publish it (its publish is bounded
#: far below this): live copies of replayed messages are dropped for this much ID time.
LATE_WINDOW_MS = 10_000
_LATE_WINDOW_IDS = LATE_WINDOW_MS << TIMESTAMP_SHIFT
#: Builds the ``resync`` frame of a channel (injected so this module needs no encoder).
ResyncFrame = Callable[[int], Frame]


class Stream:
    """Delivery state of one subscribed channel on one socket."""

    __slots__ = ("replaying", "pending", "pending_bytes", "replayed", "late", "late_max", "gapped", "lo", "hi")

    def __init__(self) -> None:
        # While True a subscribe is replaying the store: live messages wait in `pending`.
        self.replaying = False
        self.pending: list[tuple[int, Frame]] = []
        self.pending_bytes = 0
        # IDs sent by the running replay: their live copies are duplicates (a set while replaying).
        self.replayed: set[int] | None = None
        # After an unbounded replay: its IDs, whose live copies may still come (None: none).
        self.late: set[int] | None = None
        self.late_max = 0
        # Live messages were dropped: a resync is owed and live delivery pauses until it is queued.
        self.gapped = False
        # Every message of the channel with lo <= id <= hi was sent to this socket (lo > hi: none).
        self.lo = 1
        self.hi = 0

    def covers(self, message_id: int) -> bool:
        return self.lo <= message_id <= self.hi

    def sent(self, message_id: int) -> None:
        if self.lo > self.hi:
            self.lo = self.hi = message_id
        elif message_id > self.hi:
            self.hi = message_id

    def forget(self) -> None:
        self.lo, self.hi = 1, 0


class Delivery:
    """One socket's outbox and channel streams (see the module docstring)."""

    def __init__(self, *, max_frames: int, max_bytes: int, resync_frame: ResyncFrame) -> None:
        # Limits
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        # Control frames may pile up to here before the client counts as not reading.
        self.hard_frames = max_frames * 2 + 256
        self.hard_bytes = max_bytes * 2
        self._resync_frame = resync_frame
        # State
        self.outbox: list[Frame] = []
        self.frames = 0  # queued + taken but not yet written
        self.bytes = 0
        self.streams: dict[int, Stream] = {}
        self.owed: set[int] = set()  # channels owed a resync
        # user → stamp of the last presence transition passed on (insertion order: LRU).
        self.presence_seen: dict[str, int] = {}
        self.closed = False

    # Queries

    def has_room(self) -> bool:
        """Below both live bounds: a replay may queue its next frame."""
        return self.frames < self.max_frames and self.bytes < self.max_bytes

    def subscribed(self, channel: int) -> bool:
        return channel in self.streams

    # Frames that must not be dropped

    def control(self, frame: Frame) -> bool:
        """Queue a reply, ack, error or marker. False: the client is not reading (close it)."""
        if self.closed:
            return True
        if self.frames >= self.hard_frames or self.bytes >= self.hard_bytes:
            self.closed = True
            return False
        self._queue(frame)
        return True

    # Live traffic

    def live(self, channel: int, message_id: int, frame: Frame) -> bool:
        """A live message of ``channel`` (or a :class:`BatchFrame` of them). Returns True if a frame was queued."""
        stream = self.streams.get(channel)
        if stream is None or self.closed or stream.gapped:
            return False
        if type(frame) is BatchFrame:
            return self._live_batch(channel, stream, frame)
        if stream.replaying:
            if len(stream.pending) >= self.max_frames or stream.pending_bytes + len(frame) > self.max_bytes:
                self._gap(channel, stream)  # the seam cannot hold it: resync after the replay
            else:
                stream.pending.append((message_id, frame))
                stream.pending_bytes += len(frame)
            return False
        if stream.late is not None:
            if message_id in stream.late:
                return False  # replayed already; this is another node's late publish of it
            if message_id > stream.late_max + _LATE_WINDOW_IDS:
                stream.late = None  # live traffic is past any late copy
        if self.frames >= self.max_frames or self.bytes + len(frame) > self.max_bytes:
            self._gap(channel, stream)
            return False
        self._queue(frame)
        stream.sent(message_id)
        return True

    def _live_batch(self, channel: int, stream: Stream, batch: BatchFrame) -> bool:
        if stream.replaying or stream.late is not None:
            queued = False  # the seam's rules decide message by message
            for message_id, single in zip(batch.ids, batch.singles(), strict=True):
                queued = self.live(channel, message_id, single) or queued
            return queued
        if self.frames >= self.max_frames or self.bytes + len(batch) > self.max_bytes:
            self._gap(channel, stream)
            return False
        self._queue(batch)
        stream.sent(batch.ids[0])
        stream.sent(batch.ids[-1])
        return True

    def ephemeral(self, channel: int, frame: Frame) -> bool:
        """Typing and the like: queued if the channel is live and there is room, else dropped."""
        stream = self.streams.get(channel)
        if stream is None or stream.replaying or stream.gapped or self.closed or not self.has_room():
            return False
        self._queue(frame)
        return True

    def presence(self, user: str, stamp: int, frame: Frame) -> bool:
        """A presence transition, possibly one more copy of it (it comes through every small
        channel the socket shares with the user). Queued once, and only if there is room."""
        seen = self.presence_seen
        if seen.get(user) == stamp or self.closed:
            return False
        seen.pop(user, None)
        seen[user] = stamp
        if len(seen) > PRESENCE_SEEN:
            del seen[next(iter(seen))]
        if not self.has_room():
            return False
        self._queue(frame)
        return True

    def gap(self, channel: int) -> bool:
        """The relay may have lost messages of ``channel``. Returns True if a resync was queued."""
        stream = self.streams.get(channel)
        if stream is None:
            return False
        self._gap(channel, stream)
        return self._pay_resyncs()

    def kick(self, channel: int, frame: Frame) -> bool:
        """The user left ``channel``: end the stream and say so. True if it was subscribed."""
        if self.streams.pop(channel, None) is None:
            return False
        self.owed.discard(channel)
        self.control(frame)
        return True

    # Subscriptions and the seam

    def open(self, channel: int) -> bool:
        """Start a subscribe (live messages are held back). True if the channel is new here."""
        stream = self.streams.get(channel)
        new = stream is None
        if stream is None:
            stream = self.streams[channel] = Stream()
        stream.replaying = True
        stream.replayed = set()
        return new

    def cancel(self, channel: int) -> None:
        """A new subscription could not be set up: forget it."""
        self.streams.pop(channel, None)
        self.owed.discard(channel)

    def close_stream(self, channel: int) -> bool:
        """Unsubscribe. True if it was subscribed."""
        self.owed.discard(channel)
        return self.streams.pop(channel, None) is not None

    def replayed(self, channel: int, message_id: int, frame: Frame) -> bool:
        """A stored message replayed in ID order. Returns True if a frame was queued
        (False: this socket already got it, or the subscription ended meanwhile)."""
        stream = self.streams.get(channel)
        if stream is None or self.closed or not stream.replaying or stream.covers(message_id):
            return False
        if stream.replayed is not None:
            stream.replayed.add(message_id)
        self._queue(frame)
        return True

    def finish(self, channel: int, *, after: int | None, upper: int | None, last: int | None, complete: bool) -> bool:
        """End a subscribe: release what was held back. Returns True if frames were queued.

        ``after``: the client's ``since`` (None: no replay). ``upper``: the bound the replay read
        up to, if the relay gave one. ``last``: the last ID the replay read. ``complete``: False
        if the replay stopped at its cap with more stored (the client is owed a resync).
        """
        stream = self.streams.get(channel)
        if stream is None or not stream.replaying:
            return False
        pending, replayed = stream.pending, stream.replayed or set()
        stream.pending, stream.pending_bytes, stream.replayed = [], 0, None
        stream.replaying = False
        if after is not None:
            if complete:
                end = upper if upper is not None else (last if last is not None else after)
                self._cover(stream, after + 1, end)
            else:
                self._gap(channel, stream)
        if upper is None and replayed:
            stream.late, stream.late_max = replayed, max(replayed)
        if stream.gapped:
            self.owed.add(channel)
            return self._pay_resyncs()
        floor = max(after or 0, upper or 0)
        queued = False
        for message_id, frame in pending:
            if message_id > floor and message_id not in replayed:
                queued = self.live(channel, message_id, frame) or queued
        return queued

    # The writer

    def take(self, max_bytes: int | None = None) -> list[Frame]:
        """Queued frames, in order, for the writer: all of them, or as many as fit ``max_bytes``
        (at least one). They stay counted until :meth:`written`."""
        outbox = self.outbox
        if not outbox:
            return []
        if max_bytes is None or self.bytes <= max_bytes:
            self.outbox = []
            return outbox
        size, k = len(outbox[0]), 1
        while k < len(outbox) and size + len(outbox[k]) <= max_bytes:
            size += len(outbox[k])
            k += 1
        frames = outbox[:k]
        del outbox[:k]
        return frames

    def drain(self, max_bytes: int) -> list[Frame]:
        """For a writer that writes synchronously: take queued frames (as :meth:`take`) and count
        them written at once; owed resyncs may be queued behind them."""
        frames = self.take(max_bytes)
        if frames:
            self.frames -= len(frames)
            self.bytes -= sum([len(frame) for frame in frames]) if len(frames) > 1 else len(frames[0])
            if self.owed:
                self._pay_resyncs()
        return frames

    def written(self, frames: int, nbytes: int) -> bool:
        """The writer wrote ``frames`` frames of ``nbytes`` bytes. True if resyncs were queued."""
        self.frames -= frames
        self.bytes -= nbytes
        return self._pay_resyncs() if self.owed else False

    # Internals

    def _queue(self, frame: Frame) -> None:
        self.outbox.append(frame)
        self.frames += 1
        self.bytes += len(frame)

    def _gap(self, channel: int, stream: Stream) -> None:
        stream.gapped = True
        stream.pending, stream.pending_bytes = [], 0
        stream.forget()
        self.owed.add(channel)

    @staticmethod
    def _cover(stream: Stream, lo: int, hi: int) -> None:
        if lo > hi:
            return
        if stream.lo <= stream.hi and lo <= stream.hi + 1 and hi + 1 >= stream.lo:
            stream.lo, stream.hi = min(stream.lo, lo), max(stream.hi, hi)  # overlapping or adjacent
        else:
            stream.lo, stream.hi = lo, hi

    def _pay_resyncs(self) -> bool:
        """Queue owed resyncs once the outbox has drained to half (replaying channels wait)."""
        if not self.owed or self.closed or self.frames > self.max_frames // 2 or self.bytes > self.max_bytes // 2:
            return False
        queued = False
        for channel in sorted(self.owed):
            stream = self.streams.get(channel)
            if stream is None:
                self.owed.discard(channel)
            elif not stream.replaying:  # a running subscribe settles it when it finishes
                stream.gapped = False
                self.owed.discard(channel)
                self._queue(self._resync_frame(channel))
                queued = True
        return queued
