"""Who may use a channel: membership checks with a short-lived cache of positive answers."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from chat.errors import Forbidden, NotFound
from chat.models import Channel, Principal
from chat.store.base import MessageStore

MEMBERSHIP_TTL_S = 2.0  # how stale a cached "is a member" may be (another node removed them)
MEMBERSHIP_CACHE_SIZE = 50_000


class MembershipCache:
    """A bounded LRU of positive membership answers with a short TTL.

    Sends check membership on every message; caching the "yes" answers for a couple of
    seconds takes that read off the hot path. Negative answers are never cached, and local
    membership changes invalidate at once; a removal on another node is seen within the TTL.
    """

    def __init__(
        self, *, ttl_s: float = MEMBERSHIP_TTL_S, size: int = MEMBERSHIP_CACHE_SIZE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl_s
        self._size = size
        self._clock = clock
        self._entries: OrderedDict[tuple[int, str], float] = OrderedDict()

    def hit(self, channel: int, user: str) -> bool:
        key = (channel, user)
        expires = self._entries.get(key)
        if expires is None:
            return False
        if expires < self._clock():
            del self._entries[key]
            return False
        self._entries.move_to_end(key)
        return True

    def remember(self, channel: int, user: str) -> None:
        self._entries[(channel, user)] = self._clock() + self._ttl
        self._entries.move_to_end((channel, user))
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def forget(self, channel: int, user: str) -> None:
        self._entries.pop((channel, user), None)


class Access:
    """Channel existence and membership checks, shared by the message path and channel rules."""

    def __init__(self, store: MessageStore, cache: MembershipCache | None = None) -> None:
        self._store = store
        self._cache = cache or MembershipCache()

    async def require_channel(self, channel_id: int) -> Channel:
        """The channel, or not_found."""
        channel = await self._store.get_channel(channel_id)
        if channel is None:
            raise NotFound(f"no channel {channel_id}", channel=str(channel_id))
        return channel

    async def is_member(self, user: str, channel_id: int) -> bool:
        """Whether ``user`` is a member (a positive answer is cached, as for :meth:`require_member`)."""
        if self._cache.hit(channel_id, user):
            return True
        if await self._store.is_member(channel_id, user):
            self._cache.remember(channel_id, user)
            return True
        return False

    async def require_member(self, principal: Principal, channel_id: int) -> None:
        """Raise not_found (no such channel) or forbidden (not a member)."""
        if await self.is_member(principal.user, channel_id):
            return
        await self.require_channel(channel_id)
        raise Forbidden("you are not a member of this channel", channel=str(channel_id))

    def forget(self, channel_id: int, user: str) -> None:
        """``user`` left ``channel_id`` on this node: stop trusting the cached answer at once."""
        self._cache.forget(channel_id, user)
