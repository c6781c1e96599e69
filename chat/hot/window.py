"""The recent messages of one hot room, in memory, answering history pages without the store.
Pure: no clock needed, nothing awaits; the caller feeds it and reads from it.

A window holds messages in ID order and a **floor**: it holds every message with an ID above
the floor that this node has learned of. It learns of them three ways (the caller's job):

* :meth:`RecentWindow.fill` — a page of the room's newest messages read from the store. The
  floor becomes the page's oldest ID minus one (0 when the page was all of the room). Read it
  *after* the caller started receiving the room's live messages, so nothing falls between.
* :meth:`RecentWindow.add` — a live message (from the relay, or a send of this node once it is
  stored). Adds that come before the fill are kept and merged with it.
* :meth:`RecentWindow.reset` — the live stream had a gap (the relay reconnected): the window
  knows nothing any more and must be filled again.

Bounded by ``max_messages`` and ``max_bytes``: the oldest messages go first and the floor rises
past them. A floor above 0 means older messages exist (none are ever deleted).

:meth:`RecentWindow.page` follows the protocol's paging rules (``history`` op) and answers only
what it can answer exactly from what it holds; otherwise it returns None and the caller reads
the store. "Exactly" is as of what this node has received: a message another node stored a
moment ago and whose publish is still on its way is missing from the window just as it is
still missing from this node's live streams.
"""

from __future__ import annotations

import bisect
from typing import Generic, NamedTuple, TypeVar

T = TypeVar("T")


class WindowPage(NamedTuple, Generic[T]):
    items: list[T]  # ascending by ID
    has_more: bool


class RecentWindow(Generic[T]):
    """One room's recent messages (see the module docstring). Items are opaque; each comes with its ID and size."""

    def __init__(self, *, max_messages: int, max_bytes: int) -> None:
        # Limits (dynamic: the caller may change them; they apply on the next add or fill)
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._ids: list[int] = []  # ascending
        self._items: dict[int, tuple[T, int]] = {}  # ID → (item, size)
        self._bytes = 0
        # The newest ID trimmed away (or known to be missing): the floor never goes below it.
        self._cut = 0
        # Every message with an ID above this is here (None: not filled yet, answers nothing).
        self.floor: int | None = None

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ready(self) -> bool:
        return self.floor is not None

    def add(self, message_id: int, item: T, size: int) -> None:
        """A message of the room, live or just stored (repeats and messages below the floor are ignored)."""
        if message_id in self._items or (self.floor is not None and message_id <= self.floor):
            return
        ids = self._ids
        if not ids or message_id > ids[-1]:
            ids.append(message_id)
        else:
            bisect.insort(ids, message_id)  # another node's message, published a little late
        self._items[message_id] = (item, size)
        self._bytes += size
        self._trim()

    def fill(self, page: list[tuple[int, T, int]], has_more: bool) -> None:
        """The room's newest messages from the store ``(id, item, size)`` ascending; ``has_more``:
        older ones exist. Merged with what was added meanwhile; the window is ready afterwards."""
        if self.floor is not None or (has_more and not page):
            return  # filled already (live adds keep it whole), or a page that tells nothing
        # Messages added before the fill and trimmed away again are missing: stay above them.
        floor = max(page[0][0] - 1 if page and has_more else 0, self._cut)
        while self._ids and self._ids[0] <= floor:
            self._drop(self._ids[0])
        self.floor = floor
        for message_id, item, size in page:
            self.add(message_id, item, size)

    def reset(self) -> None:
        """Forget everything: the live stream may have lost messages."""
        self._ids.clear()
        self._items.clear()
        self._bytes = 0
        self._cut = 0
        self.floor = None

    def page(self, *, before: int | None, after: int | None, limit: int) -> WindowPage[T] | None:
        """The history page the store would give, or None if the window cannot tell it exactly."""
        floor = self.floor
        if floor is None or limit < 1:
            return None
        ids = self._ids
        hi = len(ids) if before is None else bisect.bisect_left(ids, before)  # ids[:hi] are < before
        if after is not None:
            if after < floor:
                return None  # the page would start below what the window holds
            lo = bisect.bisect_right(ids, after)
            chosen = ids[lo : min(hi, lo + limit)]
            return WindowPage(self._take(chosen), lo + limit < hi)
        if hi >= limit:
            return WindowPage(self._take(ids[hi - limit : hi]), hi > limit or floor > 0)
        if floor > 0:
            return None  # fewer than `limit` here, and older ones exist below the floor
        return WindowPage(self._take(ids[:hi]), False)

    def _take(self, chosen: list[int]) -> list[T]:
        items = self._items
        return [items[i][0] for i in chosen]

    def _trim(self) -> None:
        ids = self._ids
        while ids and (len(ids) > self.max_messages or self._bytes > self.max_bytes):
            oldest = ids[0]
            self._drop(oldest)
            self._cut = max(self._cut, oldest)
            if self.floor is not None:
                self.floor = max(self.floor, oldest)

    def _drop(self, oldest: int) -> None:
        """Drop ``oldest`` (it is ``_ids[0]``)."""
        del self._ids[0]
        _, size = self._items.pop(oldest)
        self._bytes -= size
