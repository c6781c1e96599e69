"""A hot room's live messages gathered for a short window into one ``messages`` frame,
``{channel, messages: [...]}`` in ID order: one frame per socket per window instead of one per
message. Pure: every call takes ``now`` (seconds, one monotonic clock).

The receiving node's hub hands each live message of a protected room to :meth:`Coalescer.add`
(the room, the message ID and the message object's JSON bytes) instead of to the sockets, and
calls :meth:`Coalescer.due` when the deadline it was given comes; each :class:`Batch` it gets
is encoded once with :func:`batch_frame` and handed to every local socket of the room.

* A room's batch opens with its first message and is due ``window_s`` later; it is due at once
  when it holds ``max_messages`` or ``max_bytes`` (bounded per room). Batches come out with
  their messages sorted by ID, each message once (a repeated ID in one batch is kept once).
* Every message added comes out in exactly one batch: nothing is dropped or held past its
  window. Beyond ``max_rooms`` open batches a message is not held at all: it comes straight
  back from :meth:`add` as a batch of one.
* Order is exact within a batch. Across batches it is arrival order, as for uncoalesced
  delivery: a message arriving after its room's batch left (another node's, published late)
  is in the next batch, and clients that need strict order across nodes sort by ID (see
  docs/architecture.md, "Known limits of the cluster").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import orjson


@dataclass(frozen=True, slots=True)
class CoalescerConfig:
    """Coalescing (dynamic configuration)."""

    window_s: float = 0.03  # how long a room's first message waits for others
    max_messages: int = 100  # a batch holding this many is due at once
    max_bytes: int = 256 * 1024  # … or this many bytes of messages
    max_rooms: int = 1000  # open batches at once; beyond, messages pass through alone

    def __post_init__(self) -> None:
        if self.window_s < 0 or min(self.max_messages, self.max_bytes, self.max_rooms) < 1:
            raise ValueError("window_s must be ≥ 0 and the bounds ≥ 1")


class Batch(NamedTuple):
    """Messages of one room, ascending by ID: their IDs and their JSON objects."""

    room: int
    ids: list[int]
    payloads: list[bytes]


class _Open:
    __slots__ = ("due", "messages", "size")

    def __init__(self, due: float) -> None:
        self.due = due  # when this batch must go
        self.messages: dict[int, bytes] = {}  # ID → message object
        self.size = 0  # bytes of messages


class Coalescer:
    """Open batches per room (see the module docstring)."""

    def __init__(self, config: CoalescerConfig | None = None) -> None:
        self.config = config or CoalescerConfig()  # dynamic: read on every call
        self._open: dict[int, _Open] = {}

    def add(self, room: int, message_id: int, payload: bytes, now: float) -> list[Batch]:
        """Gather a live message. Returns batches due at once (this room's, if it is full now;
        or this message alone, if too many rooms have open batches)."""
        c = self.config
        batch = self._open.get(room)
        if batch is None:
            if len(self._open) >= c.max_rooms:
                return [Batch(room, [message_id], [payload])]
            batch = self._open[room] = _Open(now + c.window_s)
        if message_id not in batch.messages:
            batch.messages[message_id] = payload
            batch.size += len(payload)
        if len(batch.messages) >= c.max_messages or batch.size >= c.max_bytes:
            return [self._close(room)]
        return []

    def due(self, now: float) -> tuple[list[Batch], float | None]:
        """Batches whose window has ended, and the next deadline (None: no batch is open)."""
        out = [self._close(room) for room in [r for r, batch in self._open.items() if batch.due <= now]]
        return out, min((batch.due for batch in self._open.values()), default=None)

    def flush(self, room: int | None = None) -> list[Batch]:
        """``room``'s open batch now, or every room's (None). Call it when a room cools down or
        coalescing is switched off, *before* delivering its next message directly: else that
        message would overtake the ones still gathered."""
        rooms = list(self._open) if room is None else [room] if room in self._open else []
        return [self._close(r) for r in rooms]

    def _close(self, room: int) -> Batch:
        messages = self._open.pop(room).messages
        ids = sorted(messages)
        return Batch(room, ids, [messages[i] for i in ids])


# The layout of chat.protocol.encode (not imported: chat.hot stays free of the gateway's
# imports); the tests hold the two together.
_MESSAGE_FRAME_HEAD = b'{"op":"message","type":"message","message":'


def message_object(frame: bytes) -> bytes:
    """The message object's JSON out of an encoded ``message`` frame (``chat.protocol.encode``),
    sliced without decoding; decoded and re-encoded if the frame is laid out otherwise."""
    if frame.startswith(_MESSAGE_FRAME_HEAD) and frame.endswith(b"}"):
        return frame[len(_MESSAGE_FRAME_HEAD) : -1]
    return orjson.dumps(orjson.loads(frame)["message"])


def batch_frame(batch: Batch) -> bytes:
    """The ``messages`` frame of ``batch``: ``{"op": "messages", "channel", "messages": [...]}``,
    built from the already encoded message objects (nothing is encoded again)."""
    head = orjson.dumps({"op": "messages", "type": "messages", "channel": str(batch.room)})[:-1]
    return b'%s,"messages":[%s]}' % (head, b",".join(batch.payloads))
