"""Channel rules, on ports only: create groups and rooms, open DMs, members in and out.

Who may do what (PROTOCOL.md): any member of a group may add members, up to the group limit;
anyone may join a room; a member may leave, and a group's creator (or an admin) may remove
others; a DM has exactly its two members and one channel per pair. Users added by someone
else, and users removed, are told on every node through the relay (``joined`` / a kick).
Adding *other* users is limited (:class:`~chat.ratelimit.AddGuard`: a rate per adder, a daily
budget per added user), so strangers cannot bury a user's conversations under theirs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from chat import commands, events, protocol
from chat.access import Access
from chat.errors import BadRequest, Forbidden, NotFound, RateLimited, Unavailable
from chat.guards import NO_GUARD, JoinGuard
from chat.ids import timestamp_ms
from chat.minter import IdMinter
from chat.models import Channel, ChannelKind, Principal
from chat.ratelimit import AddGuard
from chat.relay.base import Relay, user_topic
from chat.store.base import AddResult, MessageStore

log = logging.getLogger(__name__)

#: Members looked at for a channel's online count: a huge room is sampled, never read in full.
MEMBERS_SAMPLED = 10_000


@dataclass(frozen=True, slots=True)
class ChannelView:
    """A channel as its member sees it: the members (None for rooms: unbounded) and their count."""

    channel: Channel
    members: list[str] | None
    member_count: int


class ChannelService:
    """Channel rules. One per node; safe for concurrent use on one event loop."""

    def __init__(
        self,
        *,
        store: MessageStore,
        relay: Relay,
        minter: IdMinter,
        access: Access,
        group_max_members: int,
        adds: AddGuard | None = None,
        joins: JoinGuard = NO_GUARD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._relay = relay
        self._minter = minter
        self._access = access
        self._group_max = group_max_members
        # Limits on adding other users (to groups, rooms and DMs), so nobody's list gets buried;
        # None: unlimited (tools and tests that build the service alone).
        self._adds = adds
        # Hot rooms: joins over a room's budget wait in line or are refused (chat.guards).
        self._joins = joins
        self._clock = clock

    async def list_for(self, principal: Principal, page: commands.ListChannels) -> tuple[list[tuple[Channel, int | None]], int | None]:
        """A page of the caller's channels (newest first) with their read position in each, and
        the cursor of the next page (None: this was the last)."""
        channels = await self._store.list_user_channels(principal.user, before=page.before, limit=page.limit + 1)
        more = len(channels) > page.limit
        channels = channels[: page.limit]
        positions = await asyncio.gather(*(self._store.get_read(principal.user, c.id) for c in channels))
        return list(zip(channels, positions, strict=True)), (channels[-1].id if more else None)

    async def create(self, principal: Principal, command: commands.CreateChannel) -> ChannelView:
        members = list(dict.fromkeys([principal.user, *command.members]))
        if command.kind == ChannelKind.GROUP.value and len(members) > self._group_max:
            raise Forbidden(f"a group holds at most {self._group_max} members")
        others = [m for m in members if m != principal.user]
        self._admit_adds(principal, others)
        channel_id = await self._minter.mint()
        channel = Channel(channel_id, ChannelKind(command.kind), command.name, principal.user, timestamp_ms(channel_id))
        await self._store.create_channel(channel, members)
        self._spend_adds(principal, others)
        await self._announce_joined(channel, others)
        return ChannelView(channel, sorted(members), len(members))

    async def open_dm(self, principal: Principal, command: commands.OpenDm) -> tuple[ChannelView, bool]:
        """The DM of the caller and ``command.user``: ``(view, created)``."""
        if command.user == principal.user:
            raise BadRequest("a DM needs two different users")
        low, high = sorted((principal.user, command.user))
        dm_key = f"{low}\n{high}"
        try:
            self._admit_adds(principal, [command.user])
        except RateLimited:
            existing = await self._store.get_dm(dm_key)  # reopening a DM adds nobody: never refused
            if existing is None:
                raise
            return ChannelView(existing, [low, high], 2), False
        channel_id = await self._minter.mint()
        proposed = Channel(channel_id, ChannelKind.DM, f"{low}, {high}", principal.user, timestamp_ms(channel_id), dm_key=dm_key)
        channel, created = await self._store.get_or_create_dm(proposed, (low, high))
        if created:
            self._spend_adds(principal, [command.user])
            await self._announce_joined(channel, [command.user])
        return ChannelView(channel, [low, high], 2), created

    async def get(self, principal: Principal, channel_id: int) -> ChannelView:
        """The channel with its members; members only."""
        await self._access.require_member(principal, channel_id)
        channel = await self._access.require_channel(channel_id)
        if channel.kind is ChannelKind.ROOM:
            return ChannelView(channel, None, await self._store.count_members(channel_id))
        members = await self._store.list_members(channel_id)
        return ChannelView(channel, members, len(members))

    async def members_sample(self, principal: Principal, channel_id: int) -> tuple[list[str], bool]:
        """Up to :data:`MEMBERS_SAMPLED` members (members only), and whether that is all of them."""
        await self._access.require_member(principal, channel_id)
        members = await self._store.list_members(channel_id, limit=MEMBERS_SAMPLED + 1)
        return members[:MEMBERS_SAMPLED], len(members) <= MEMBERS_SAMPLED

    async def add_member(self, principal: Principal, command: commands.AddMember) -> tuple[str, AddResult]:
        """Add ``command.user`` (or the caller); returns ``(user, result)``."""
        target = principal.user if command.user is None else command.user
        channel = await self._access.require_channel(command.channel)
        if channel.kind is ChannelKind.DM:
            raise Forbidden("a DM has exactly its two members")
        limit: int | None = None
        if channel.kind is ChannelKind.GROUP:
            # Groups are invite-only: only members add, and nobody adds themselves.
            await self._access.require_member(principal, command.channel)
            limit = self._group_max
        elif target != principal.user:
            await self._access.require_member(principal, command.channel)
        elif not await self._access.is_member(target, command.channel):
            # Joining a room yourself is a join (what a hot room's join budget counts and its
            # waiting room queues); being added by a member, or already being one, is not.
            await self._joins.join(target, command.channel, command.ticket)
        others = [] if target == principal.user else [target]
        self._admit_adds(principal, others)
        result = await self._store.add_member(command.channel, target, max_members=limit)
        if result is AddResult.FULL:
            raise Forbidden(f"the group is full ({self._group_max} members)")
        if result is AddResult.NO_CHANNEL:
            raise NotFound(f"no channel {command.channel}")
        if result is AddResult.ADDED and others:
            self._spend_adds(principal, others)
            await self._announce_joined(channel, others)
        return target, result

    async def remove_member(self, principal: Principal, command: commands.RemoveMember) -> None:
        channel = await self._access.require_channel(command.channel)
        if channel.kind is ChannelKind.DM:
            raise Forbidden("a DM has exactly its two members")
        if command.user != principal.user:
            await self._access.require_member(principal, command.channel)
            if principal.user != channel.created_by and not principal.is_admin:
                raise Forbidden("only the channel's creator may remove other members")
        removed = await self._store.remove_member(command.channel, command.user)
        self._access.forget(command.channel, command.user)
        if not removed:
            raise NotFound(f"{command.user} is not a member of this channel")
        # The user's live subscriptions to the channel end on every node.
        frame = protocol.encode("unsubscribed", {"channels": [str(command.channel)], "reason": "removed"})
        try:
            await self._relay.publish(user_topic(command.user), events.pack(events.KICK, command.channel, 0, "-", frame))
        except Unavailable:
            log.warning("relay down: a removed user stays subscribed to %d on other nodes until they reconnect", command.channel)

    def _admit_adds(self, principal: Principal, others: list[str]) -> None:
        """Refuse adding ``others`` past the caller's rate or past one of their daily budgets."""
        if not others or self._adds is None:
            return
        if len(others) > self._adds.max_at_once:
            raise BadRequest(f"at most {self._adds.max_at_once} other users can be added in one request")
        wait_s, user = self._adds.check(principal.user, others, self._clock())
        if not wait_s:
            return
        retry_after_ms = max(1, int(wait_s * 1000) + 1)
        if user is None:
            raise RateLimited("you are adding other users to channels too fast", retry_after_ms=retry_after_ms)
        raise RateLimited(f"{user} was added to too many channels by others lately", retry_after_ms=retry_after_ms, user=user)

    def _spend_adds(self, principal: Principal, others: list[str]) -> None:
        if self._adds is not None:
            self._adds.spend(principal.user, others, self._clock())

    async def _announce_joined(self, channel: Channel, users: list[str]) -> None:
        """Tell users added by someone else, on every node, so their clients list the channel at once."""
        frame = protocol.encode("joined", {"channel": channel.to_wire()})
        for user in users:
            try:
                await self._relay.publish(user_topic(user), events.pack(events.JOINED, channel.id, 0, "-", frame))
            except Unavailable:
                log.warning("relay down: %d added user(s) learn of channel %d on their next listing", len(users), channel.id)
                return
