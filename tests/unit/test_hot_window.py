"""chat.hot.window: a hot room's recent messages answer history pages exactly as the store would, or not at all."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from chat.hot.window import RecentWindow, WindowPage


def reference(ids: list[int], *, before: int | None, after: int | None, limit: int) -> WindowPage[int]:
    """The store's paging rules (PROTOCOL.md, `history`) over every stored ID."""
    inside = [i for i in ids if (before is None or i < before) and (after is None or i > after)]
    if after is not None:
        return WindowPage(inside[:limit], len(inside) > limit)
    return WindowPage(inside[-limit:] if limit else [], len(inside) > limit)


def window_of(ids: list[int], fill_newest: int, *, max_messages: int = 1000) -> RecentWindow[int]:
    window: RecentWindow[int] = RecentWindow(max_messages=max_messages, max_bytes=10**9)
    page = ids[-fill_newest:] if fill_newest else []
    window.fill([(i, i, 1) for i in page], has_more=len(ids) > len(page))
    return window


def test_nothing_is_answered_before_the_fill_and_everything_after_a_complete_one() -> None:
    window: RecentWindow[int] = RecentWindow(max_messages=100, max_bytes=10**6)
    window.add(7, 7, 1)
    assert window.page(before=None, after=None, limit=10) is None
    window.fill([(3, 3, 1), (5, 5, 1)], has_more=False)  # the whole room; 7 came live meanwhile
    assert window.page(before=None, after=None, limit=10) == WindowPage([3, 5, 7], False)
    assert window.page(before=None, after=None, limit=2) == WindowPage([5, 7], True)
    assert window.page(before=5, after=None, limit=10) == WindowPage([3], False)
    assert window.page(before=None, after=3, limit=1) == WindowPage([5], True)
    assert window.page(before=7, after=3, limit=5) == WindowPage([5], False)


def test_a_partial_fill_answers_only_what_lies_above_its_floor() -> None:
    window = window_of(list(range(1, 101)), fill_newest=20)  # 81..100 known, older ones exist
    assert window.floor == 80
    assert window.page(before=None, after=None, limit=20) == WindowPage(list(range(81, 101)), True)
    assert window.page(before=None, after=None, limit=21) is None  # needs 80, which is below the floor
    assert window.page(before=None, after=79, limit=5) is None
    assert window.page(before=None, after=80, limit=5) == WindowPage([81, 82, 83, 84, 85], True)


def test_trimming_raises_the_floor_and_a_gap_forgets_everything() -> None:
    window = window_of([1, 2, 3], fill_newest=3, max_messages=3)
    window.add(4, 4, 1)
    assert window.floor == 1 and len(window) == 3
    assert window.page(before=None, after=None, limit=3) == WindowPage([2, 3, 4], True)  # 1 exists below
    assert window.page(before=None, after=0, limit=3) is None
    window.reset()
    assert not window.ready and window.page(before=None, after=None, limit=1) is None


def test_live_adds_trimmed_away_before_the_fill_keep_the_floor_above_them() -> None:
    window: RecentWindow[int] = RecentWindow(max_messages=2, max_bytes=10**6)
    for i in (10, 11, 12):
        window.add(i, i, 1)  # 10 is trimmed: the window must never claim to hold it
    window.fill([(9, 9, 1), (10, 10, 1)], has_more=False)
    assert window.floor == 10
    assert window.page(before=None, after=None, limit=5) is None
    assert window.page(before=None, after=None, limit=2) == WindowPage([11, 12], True)


@settings(max_examples=300, deadline=None)
@given(
    stored=st.lists(st.integers(1, 400), unique=True, max_size=60).map(sorted),
    fill_newest=st.integers(0, 60),
    late=st.lists(st.integers(401, 800), unique=True, max_size=20),
    max_messages=st.integers(1, 80),
    before=st.none() | st.integers(0, 820),
    after=st.none() | st.integers(0, 820),
    limit=st.integers(1, 30),
)
def test_any_answer_is_the_stores_answer(
    *,
    stored: list[int], fill_newest: int, late: list[int], max_messages: int, before: int | None, after: int | None, limit: int
) -> None:
    window = window_of(stored, fill_newest, max_messages=max_messages)
    for i in late:  # live messages, published a little out of order across nodes
        window.add(i, i, 1)
    everything = sorted(stored + late)
    got = window.page(before=before, after=after, limit=limit)
    if got is not None:
        assert got == reference(everything, before=before, after=after, limit=limit)
    if fill_newest >= len(stored) and len(everything) <= max_messages:
        assert got is not None  # it holds the whole room: it answers everything
