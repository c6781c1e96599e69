"""The storage write batcher with scripted clocks: flush by size, bytes and age, the
statements/s budget, up-front refusals — and that nothing accepted is ever dropped."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chat.hot.batcher import Batch, Batcher, BatcherConfig

CFG = BatcherConfig(linger_s=0.02, max_batch=3, max_batch_bytes=100, statements_per_s=100, burst_s=0.02, max_inflight=1, max_queue=5, max_age_s=0.5)


def items(batches: list[Batch[str, int]]) -> list[list[str]]:
    return [b.items for b in batches]


def test_a_partition_flushes_when_full_or_after_linger() -> None:
    b: Batcher[str, int] = Batcher(CFG, now=0.0)
    assert b.due(0) == ([], None)
    b.offer("p", "m1", 1, 0.0, size=10)
    assert b.due(0.01) == ([], pytest.approx(0.02))  # gathering
    batches, _ = b.due(0.02)
    assert items(batches) == [["m1"]] and batches[0].handles == [1] and batches[0].oldest == 0.0
    b.done(batches[0], ok=True)
    for i in range(4):
        b.offer("p", f"n{i}", i, 1.0, size=10)
    batches, nxt = b.due(1.0)  # three make a full batch at once; the fourth waits for company
    assert items(batches) == [["n0", "n1", "n2"]] and nxt is None  # one in flight (max_inflight=1)
    b.done(batches[0], ok=True)
    assert b.due(1.0) == ([], pytest.approx(1.02))
    assert items(b.due(1.02)[0]) == [["n3"]]


def test_bytes_bound_a_batch_and_a_big_item_goes_alone() -> None:
    b: Batcher[str, int] = Batcher(CFG, now=0.0)
    for name, size in (("a", 60), ("b", 60), ("c", 500)):
        b.offer("p", name, 0, 0.0, size=size)
    out = []
    for t in (0.02, 0.04, 0.06):
        batches, _ = b.due(t)
        out += items(batches)
        for batch in batches:
            b.done(batch, ok=True)
    assert out == [["a"], ["b"], ["c"]]
    assert len(b) == 0


def test_the_budget_paces_batches_oldest_partition_first() -> None:
    b: Batcher[str, int] = Batcher(CFG, now=0.0)  # 100 statements/s, burst 2
    for i, p in enumerate("abcd"):
        b.offer(p, p, i, 0.001 * i)
    batches, nxt = b.due(0.05)
    assert [x.partition for x in batches] == ["a", "b"] and nxt == pytest.approx(0.06)
    assert [x.partition for x in b.due(0.06)[0]] == ["c"]
    assert [x.partition for x in b.due(0.07)[0]] == ["d"]
    assert b.batches == 4


def test_offers_are_refused_up_front_when_full_old_or_too_many() -> None:
    b: Batcher[str, int] = Batcher(CFG, now=0.0)
    for i in range(5):
        assert b.offer("p", str(i), i, 0.0) is None
    assert b.offer("p", "x", 9, 0.0) == 17  # 5 queued: 2 batches at 100/s, rounded up
    b.due(0.1)  # one batch in flight, never done: the writer is stuck
    b.offer("p", "y", 9, 0.1)
    assert b.offer("p", "z", 9, 0.6) is not None  # the oldest has waited 0.6 s ≥ max_age_s
    assert b.offer("q", "z", 9, 0.6) is None  # other partitions are not held up
    small: Batcher[str, int] = Batcher(BatcherConfig(max_items=2, max_partitions=1), now=0.0)
    assert small.offer("p", "1", 1, 0) is None
    assert small.offer("q", "1", 1, 0) is not None  # one partition at most
    assert small.offer("p", "2", 2, 0) is None
    assert small.offer("p", "3", 3, 0) is not None  # two items at most
    assert b.refused == 2 and small.refused == 2


def test_failed_batches_free_their_place_and_idle_partitions_are_forgotten() -> None:
    b: Batcher[str, int] = Batcher(CFG, now=0.0)
    b.offer("p", "m", 1, 0.0)
    (batch,), _ = b.due(0.02)
    b.done(batch, ok=False)
    assert len(b) == 0 and b.failed == 1 and b.due(1.0) == ([], None)
    for bad in ({"statements_per_s": 0}, {"max_batch": 0}, {"linger_s": -1}):
        with pytest.raises(ValueError):
            BatcherConfig(**bad)  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.floats(0, 0.05), st.sampled_from("pqr"), st.integers(0, 120), st.sampled_from(["offer", "offer", "due", "done", "fail"])),
        min_size=1,
        max_size=300,
    )
)
def test_every_offer_is_refused_at_once_or_written_in_exactly_one_batch(ops: list[tuple[float, str, int, str]]) -> None:
    b: Batcher[int, int] = Batcher(CFG, now=0.0)
    now, accepted, written = 0.0, {}, []  # accepted: item → partition
    inflight: list[Batch[int, int]] = []
    for i, (step, partition, size, op) in enumerate(ops):
        now += step
        if op == "offer":
            if b.offer(partition, i, i, now, size=size) is None:
                accepted[i] = partition
        elif op == "due":
            batches, _ = b.due(now)
            inflight += batches
            written += [(x, batch.partition) for batch in batches for x in batch.items]
        elif inflight:
            b.done(inflight.pop(0), ok=op == "done")
    for _ in range(1000):  # the writer catches up
        if not inflight and not len(b):
            break
        for batch in inflight:
            b.done(batch, ok=True)
        now += 1
        inflight, _ = b.due(now)
        written += [(x, batch.partition) for batch in inflight for x in batch.items]
    assert len(b) == 0
    assert sorted(x for x, _ in written) == sorted(accepted)  # each exactly once, nothing refused
    assert all(accepted[x] == p for x, p in written)
    for partition in "pqr":  # and in offer order per partition
        order = [x for x, p in written if p == partition]
        assert order == sorted(order)


@settings(max_examples=100, deadline=None)
@given(offers=st.lists(st.tuples(st.floats(0, 0.01), st.sampled_from("pqrs")), min_size=1, max_size=300), poll=st.floats(0.001, 0.02))
def test_while_the_budget_allows_no_item_waits_past_linger(offers: list[tuple[float, str]], poll: float) -> None:
    cfg = BatcherConfig(linger_s=0.02, max_batch=10, statements_per_s=10_000, max_inflight=1)
    b: Batcher[float, None] = Batcher(cfg, now=0.0)
    now, t, pending = 0.0, 0.0, list(offers)
    while pending or len(b):
        now += poll
        while pending and t + pending[0][0] <= now:
            step, partition = pending.pop(0)
            t += step
            assert b.offer(partition, t, None, t) is None
        batches, _ = b.due(now)
        for batch in batches:
            assert now - min(batch.items) <= cfg.linger_s + poll + 1e-9
            b.done(batch, ok=True)  # written at once
