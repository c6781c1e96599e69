"""The message path and channel rules, on ports only.

send: validate → check membership → mint a Snowflake → store durably → publish on the
relay (in ID order per channel) → return for the ack. A message is either refused
before it is stored, or stored and then acked; publishing is best effort because every
subscriber can recover from the store: a message that could not be published is
announced as a gap (``chat.gaps``) and its channel's sockets get ``resync``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from chat import events, protocol
from chat.auth import valid_user_id
from chat.config import Settings
from chat.gaps import GapAnnouncer
from chat.sequencer import Sequencer
from chat.errors import BadRequest, ChatError, Forbidden, NotFound, Unavailable
from chat.ids import IdMinter, timestamp_ms
from chat.models import Channel, ChannelKind, Message, Page, Principal
from chat.relay.base import Relay, channel_topic, user_topic
from chat.store.base import AddResult, MessageStore

log = logging.getLogger(__name__)

MAX_CHANNEL_NAME = 100
MEMBERSHIP_TTL_S = 2.0  # how stale a cached "is a member" may be (another node removed them)
MEMBERSHIP_CACHE_SIZE = 50_000


class MembershipCache:
    """A bounded LRU of positive membership answers with a short TTL.

    Sends check membership on every message; caching the "yes" answers for a couple of
    seconds takes that read off the hot path. Negative answers are never cached, and local
    membership changes invalidate at once; a removal on another node is seen within the TTL.
    """

    def __init__(self, *, ttl_s: float = MEMBERSHIP_TTL_S, size: int = MEMBERSHIP_CACHE_SIZE) -> None:
        self._ttl = ttl_s
        self._size = size
        self._entries: OrderedDict[tuple[int, str], float] = OrderedDict()

    def hit(self, channel: int, user: str) -> bool:
        key = (channel, user)
        expires = self._entries.get(key)
        if expires is None:
            return False
        if expires < time.monotonic():
            del self._entries[key]
            return False
        self._entries.move_to_end(key)
        return True

    def remember(self, channel: int, user: str) -> None:
        self._entries[(channel, user)] = time.monotonic() + self._ttl
        self._entries.move_to_end((channel, user))
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def forget(self, channel: int, user: str) -> None:
        self._entries.pop((channel, user), None)


class ChatService:
    """Channel rules and the message path. One per node; safe for concurrent use on one loop."""

    def __init__(self, settings: Settings, store: MessageStore, relay: Relay, minter: IdMinter) -> None:
        self.settings = settings
        self.store = store
        self.relay = relay
        self.minter = minter
        self.members = MembershipCache()
        # Hands each channel's messages to the relay in ID order as their stores complete.
        self.sequencer = Sequencer(self._hand_off_message)
        self.gaps = GapAnnouncer(relay)

    async def close(self) -> None:
        await self.gaps.close()

    # Access checks

    async def require_channel(self, channel_id: int) -> Channel:
        channel = await self.store.get_channel(channel_id)
        if channel is None:
            raise NotFound(f"no channel {channel_id}", channel=str(channel_id))
        return channel

    async def require_member(self, principal: Principal, channel_id: int) -> None:
        """Raise not_found (no such channel) or forbidden (not a member)."""
        if self.members.hit(channel_id, principal.user):
            return
        if await self.store.is_member(channel_id, principal.user):
            self.members.remember(channel_id, principal.user)
            return
        await self.require_channel(channel_id)
        raise Forbidden("you are not a member of this channel", channel=str(channel_id))

    # The message path

    async def send(
        self,
        principal: Principal,
        channel_id: int,
        text: str,
        client_msg_id: str,
        *,
        on_stored: Callable[[Message, bool], None] | None = None,
    ) -> tuple[Message, bool]:
        """Store and publish a message; returns ``(message, created)`` (False on an idempotent retry).

        ``on_stored`` is where the gateway acks. On the in-process relay it runs as soon as
        the message is durable, before publishing, because publishing there *is* the local
        fan-out and the sender's ack must not queue behind a large room. On a shared relay
        it runs once the relay confirmed the publish: an ack then means every node will see
        this message before any message sent after the ack, so a reply never overtakes what
        it answers, even across nodes.

        The channel's next message may publish as soon as this one is *handed off* to the
        relay (written in order), not once it is confirmed: a hot channel is then not held to
        one publish per round trip to the broker.
        """
        text = protocol.validate_text(text, self.settings.max_message_chars)
        client_msg_id = protocol.validate_client_msg_id(client_msg_id)
        await self.require_member(principal, channel_id)
        message_id = await self.minter.mint()
        slot = self.sequencer.join(channel_id, message_id)  # no await since minting: ID order
        try:
            message = Message(message_id, channel_id, principal.user, text, timestamp_ms(message_id), client_msg_id)
            stored, created = await self.store.insert_message(message)
            ack_first = self.relay.node_local or not created
            if ack_first and on_stored is not None:
                on_stored(stored, created)
            self.sequencer.ready(slot, _message_payload(stored) if created else None)
            if created:
                confirmed = await self.sequencer.handed(slot, self.settings.store_timeout_s)
                if confirmed is not None:
                    await self._confirm(confirmed, stored)
                if not ack_first and on_stored is not None:
                    on_stored(stored, created)
            return stored, created
        finally:
            self.sequencer.ready(slot, None)  # failed or cancelled: let the channel's queue move on

    def _hand_off_message(self, channel_id: int, payload: bytes) -> Awaitable[None] | None:
        """Hand a message to the relay now; None if it refused at once (a gap is owed)."""
        try:
            return self.relay.hand_off(channel_topic(channel_id), payload)
        except ChatError:
            self._missed(channel_id)
            return None

    async def _confirm(self, confirmed: Awaitable[None], message: Message) -> None:
        try:
            await confirmed
        except ChatError:
            self._missed(message.channel)
        except asyncio.CancelledError:
            self._missed(message.channel)  # stored, maybe never published: say so
            raise

    def _missed(self, channel_id: int) -> None:
        # Stored is what counts: subscribers recover it from the store on resync. Debug
        # only: the relay warns once per outage, not once per message.
        log.debug("relay publish failed for a message of channel %d; it is stored", channel_id)
        self.gaps.missed(channel_id)

    def replay_bound(self, channel_id: int) -> tuple[int | None, asyncio.Future[Any] | None]:
        """For a subscribe seam: ``(upper, tail)``.

        With a node-local relay every message of the channel is minted here: all IDs up to
        ``upper`` are minted already and published once ``tail`` is done, and every later ID
        will be published after the caller's subscription. Replaying the store up to
        ``upper`` and taking the rest live is then gap-free and in ID order. With a shared
        relay other nodes mint too, so there is no bound (``None``) and the seam is
        de-duplicated by ID instead.
        """
        if not self.relay.node_local:
            return None, None
        return self.minter.last_id, self.sequencer.tail(channel_id)

    async def settle(self, tail: asyncio.Future[Any] | None) -> None:
        """Wait (bounded) until ``tail`` from :meth:`replay_bound` is done."""
        if tail is not None and not tail.done():
            try:
                await asyncio.wait_for(asyncio.shield(tail), self.settings.store_timeout_s)
            except TimeoutError:
                log.warning("gave up waiting %.1fs for earlier sends of a channel to publish", self.settings.store_timeout_s)

    async def history(
        self, principal: Principal, channel_id: int, *, before: int | None, after: int | None, limit: int
    ) -> Page:
        await self.require_member(principal, channel_id)
        return await self.store.history(channel_id, before=before, after=after, limit=limit)

    async def typing(self, principal: Principal, channel_id: int, origin: str) -> None:
        await self.require_member(principal, channel_id)
        frame = protocol.encode("typing", {"channel": str(channel_id), "user": principal.user})
        await self.relay.publish(channel_topic(channel_id), events.pack(events.TYPING, channel_id, 0, origin, frame))

    async def mark_read(self, principal: Principal, channel_id: int, message_id: int, origin: str) -> int:
        """Advance the caller's read position and tell their other devices."""
        await self.require_member(principal, channel_id)
        position = await self.store.set_read(principal.user, channel_id, message_id)
        frame = protocol.encode("read", {"channel": str(channel_id), "message_id": str(position)})
        try:
            await self.relay.publish(user_topic(principal.user), events.pack(events.READ, channel_id, position, origin, frame))
        except Unavailable:
            log.warning("relay publish of a read marker failed; it is stored")
        return position

    # Channels

    async def list_channels(self, principal: Principal) -> list[Channel]:
        return await self.store.list_user_channels(principal.user)

    async def create_channel(self, principal: Principal, kind: str, name: str, members: list[str]) -> tuple[Channel, list[str]]:
        if kind not in (ChannelKind.GROUP.value, ChannelKind.ROOM.value):
            raise BadRequest("kind must be 'group' or 'room' (DMs are opened with POST /v1/dms)")
        name = _validate_name(name)
        wanted = _validate_users(members)
        all_members = list(dict.fromkeys([principal.user, *wanted]))
        if kind == ChannelKind.GROUP.value and len(all_members) > self.settings.group_max_members:
            raise Forbidden(f"a group holds at most {self.settings.group_max_members} members")
        channel_id = await self.minter.mint()
        channel = Channel(channel_id, ChannelKind(kind), name, principal.user, timestamp_ms(channel_id))
        await self.store.create_channel(channel, all_members)
        await self._announce_joined(channel, [m for m in all_members if m != principal.user])
        return channel, sorted(all_members)

    async def open_dm(self, principal: Principal, other: object) -> tuple[Channel, bool]:
        if not valid_user_id(other):
            raise BadRequest("user must be a user id (1-64 characters of [A-Za-z0-9_.-])")
        assert isinstance(other, str)
        if other == principal.user:
            raise BadRequest("a DM needs two different users")
        pair = tuple(sorted((principal.user, other)))
        channel_id = await self.minter.mint()
        proposed = Channel(channel_id, ChannelKind.DM, f"{pair[0]}, {pair[1]}", principal.user, timestamp_ms(channel_id), dm_key=f"{pair[0]}\n{pair[1]}")
        channel, created = await self.store.get_or_create_dm(proposed, pair)  # type: ignore[arg-type]
        if created:
            await self._announce_joined(channel, [other])
        return channel, created

    async def get_channel(self, principal: Principal, channel_id: int) -> tuple[Channel, list[str] | None, int]:
        """Channel, its members (None for rooms: unbounded) and member count; members only."""
        await self.require_member(principal, channel_id)
        channel = await self.require_channel(channel_id)
        if channel.kind is ChannelKind.ROOM:
            return channel, None, await self.store.count_members(channel_id)
        members = await self.store.list_members(channel_id)
        return channel, members, len(members)

    async def add_member(self, principal: Principal, channel_id: int, user: object | None) -> AddResult:
        target = principal.user if user is None else user
        if not valid_user_id(target):
            raise BadRequest("user must be a user id (1-64 characters of [A-Za-z0-9_.-])")
        assert isinstance(target, str)
        channel = await self.require_channel(channel_id)
        if channel.kind is ChannelKind.DM:
            raise Forbidden("a DM has exactly its two members")
        if channel.kind is ChannelKind.GROUP:
            # Groups are invite-only: only members add, and nobody adds themselves.
            await self.require_member(principal, channel_id)
            limit: int | None = self.settings.group_max_members
        else:
            if target != principal.user:
                await self.require_member(principal, channel_id)
            limit = None
        result = await self.store.add_member(channel_id, target, max_members=limit)
        if result is AddResult.FULL:
            raise Forbidden(f"the group is full ({self.settings.group_max_members} members)")
        if result is AddResult.NO_CHANNEL:
            raise NotFound(f"no channel {channel_id}")
        if result is AddResult.ADDED and target != principal.user:
            await self._announce_joined(channel, [target])
        return result

    async def _announce_joined(self, channel: Channel, users: list[str]) -> None:
        """Tell users added by someone else, on every node, so their clients list the channel at once."""
        frame = protocol.encode("joined", {"channel": channel.to_wire()})
        for user in users:
            try:
                await self.relay.publish(user_topic(user), events.pack(events.JOINED, channel.id, 0, "-", frame))
            except Unavailable:
                log.warning("relay down: %s learns of channel %d on their next channel listing", user, channel.id)
                return

    async def read_positions(self, principal: Principal, channel_ids: list[int]) -> dict[int, int | None]:
        """The caller's read position in each channel (for unread counts on any device)."""
        positions = await asyncio.gather(*(self.store.get_read(principal.user, c) for c in channel_ids))
        return dict(zip(channel_ids, positions))

    async def remove_member(self, principal: Principal, channel_id: int, user: str) -> None:
        channel = await self.require_channel(channel_id)
        if not valid_user_id(user):
            raise BadRequest("invalid user id")
        if channel.kind is ChannelKind.DM:
            raise Forbidden("a DM has exactly its two members")
        if user != principal.user:
            await self.require_member(principal, channel_id)
            if principal.user != channel.created_by and not principal.is_admin:
                raise Forbidden("only the channel's creator may remove other members")
        removed = await self.store.remove_member(channel_id, user)
        self.members.forget(channel_id, user)
        if not removed:
            raise NotFound(f"{user} is not a member of this channel")
        # The user's live subscriptions to the channel end on every node.
        frame = protocol.encode("unsubscribed", {"channels": [str(channel_id)], "reason": "removed"})
        try:
            await self.relay.publish(user_topic(user), events.pack(events.KICK, channel_id, 0, "-", frame))
        except Unavailable:
            log.warning("relay down: %s stays subscribed to %d on other nodes until they reconnect", user, channel_id)


def _message_payload(message: Message) -> bytes:
    """The relay envelope of a new message: its frame, encoded once for every node and socket."""
    frame = protocol.encode("message", {"message": message.to_wire()})
    return events.pack(events.MESSAGE, message.channel, message.id, "-", frame)


def _validate_name(name: object) -> str:
    if not isinstance(name, str):
        raise BadRequest("name must be a string")
    name = name.strip()
    if not 1 <= len(name) <= MAX_CHANNEL_NAME:
        raise BadRequest(f"name must be 1 to {MAX_CHANNEL_NAME} characters")
    return name


def _validate_users(users: object) -> list[str]:
    if users is None:
        return []
    if not isinstance(users, list):
        raise BadRequest("members must be a list of user ids")
    if len(users) > 10_000:
        raise BadRequest("too many members in one request")
    for user in users:
        if not valid_user_id(user):
            raise BadRequest(f"invalid user id {str(user)[:70]!r}")
    return list(users)
