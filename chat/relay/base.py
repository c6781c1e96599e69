"""The Relay port: carries already-encoded events between nodes.

Contract (``tests/contract/test_relay.py``):

* ``publish(topic, payload)`` delivers ``payload`` (bytes, opaque to the relay) to the
  handler of every node subscribed to ``topic`` — including this one — **in publish
  order per topic and publisher**. Delivery is at-most-once: durability is the store's job.
* ``subscribe``/``unsubscribe`` are called by the hub on 0↔1 transitions of local
  interest; ``subscribe`` returns once messages published afterwards will be delivered.
* When delivery may have been interrupted (connection lost and re-established) the relay
  calls ``on_gap(topics)`` for the topics it was subscribed to, after resubscribing, so
  the hub can tell their sockets to ``resync`` from the store.
* ``hand_off(topic, payload)`` takes the payload *now*: payloads handed off one after another
  on a node go out in that order even if nobody awaited the first. It returns an awaitable
  that completes once the relay **confirmed** the payload — meaning every payload handed off
  later, by any node, is delivered after this one to every subscriber — or raises
  :class:`chat.errors.Unavailable` (at once, or from the awaitable) if it cannot carry it.
  The message path acks a message once its hand-off is confirmed (so a reply never overtakes
  what it answers) and releases a channel's next message as soon as this one is handed off
  (so a hot channel is not limited to one publish per round trip to the broker).
* ``publish`` is ``await hand_off(...)``.
* ``single_node`` is a property of the adapter, not of the deployment: True when no other
  process can publish to this relay, so every payload a subscriber receives was handed off in
  this process. The subscribe seam relies on it: with a single node, the node's own minter
  bounds what the store holds and what arrives live (exact ID order at the seam); otherwise
  the seam reads the store to its end and de-duplicates by ID.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

# (topic, payload) → None. Called on the event loop, must not block, must not raise.
DeliverFn = Callable[[str, bytes], None]
# Topics whose delivery had a gap (relay reconnected).
GapFn = Callable[[Iterable[str]], None]


class Relay(Protocol):
    #: True when no other process can publish to this relay (see the module docstring).
    single_node: bool

    async def start(self, deliver: DeliverFn, on_gap: GapFn) -> None:
        """Connect and start delivering to ``deliver``."""

    async def close(self) -> None:
        ...

    async def ping(self) -> None:
        """Raise :class:`~chat.errors.Unavailable` if the relay cannot publish right now."""

    async def subscribe(self, topic: str) -> None:
        ...

    async def unsubscribe(self, topic: str) -> None:
        ...

    def hand_off(self, topic: str, payload: bytes) -> Awaitable[None]:
        """Take ``payload`` now, in call order; await the result for the confirmation."""
        ...

    async def publish(self, topic: str, payload: bytes) -> None:
        ...


def channel_topic(channel_id: int) -> str:
    return f"c:{channel_id}"


def user_topic(user: str) -> str:
    return f"u:{user}"


def presence_topic(user: str) -> str:
    """Transitions of ``user``, for sockets that asked with ``presence_subscribe``."""
    return f"p:{user}"
