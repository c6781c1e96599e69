"""Relay envelopes: one encoded server frame plus the few facts a receiving node needs
to route it without decoding the JSON.

Layout (ASCII header, one line, then the frame bytes exactly as sockets receive them)::

    <kind> <channel> <message_id> <origin_session>\\n<frame JSON>

``kind`` is one of ``m`` (message), ``t`` (typing), ``r`` (read marker), ``k`` (kick:
the user left a channel), ``j`` (joined: the user was added to a channel), ``g`` (gap: a
message of the channel is stored but was not published; no frame), ``p`` (a presence
transition: ``origin`` is the user, ``message_id`` the transition's stamp, see
``chat.watchers.stamp``), ``w`` (a waiting-room frame for the user: ``waiting``/``admitted``),
``h`` (hot-room rates one node reports to the others: ``origin`` is the node, the frame a JSON
report, see ``chat.protect.rooms``). Unused numbers are ``0``, an unknown origin ``-``.
The frame is encoded once by the publisher; every node and every socket reuses it.
"""

from __future__ import annotations

from dataclasses import dataclass

MESSAGE = "m"
TYPING = "t"
READ = "r"
KICK = "k"
JOINED = "j"
GAP = "g"
PRESENCE = "p"
WAITING = "w"
HOT = "h"


@dataclass(frozen=True, slots=True)
class Envelope:
    kind: str
    channel: int
    message_id: int
    origin: str  # session ID that caused it ("-" if none): its own socket skips read markers
    frame: bytes  # the server frame, ready to send


def pack(kind: str, channel: int, message_id: int, origin: str, frame: bytes) -> bytes:
    return b"%s %d %d %s\n%s" % (kind.encode(), channel, message_id, origin.encode(), frame)


def unpack(payload: bytes) -> Envelope:
    """Inverse of :func:`pack`; raises ValueError on a malformed payload."""
    header, sep, frame = payload.partition(b"\n")
    if not sep:
        raise ValueError("relay payload without header")
    kind, channel, message_id, origin = header.decode().split(" ")
    return Envelope(kind, int(channel), int(message_id), origin, frame)
