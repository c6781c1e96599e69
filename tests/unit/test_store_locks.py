"""KeyedLocks (chat/store/locks.py): exclusion per key, and no entry left behind."""

from __future__ import annotations

import asyncio

from chat.store.locks import KeyedLocks


async def test_one_holder_per_key_and_other_keys_do_not_wait() -> None:
    locks = KeyedLocks()
    inside: dict[str, int] = {"a": 0, "b": 0}
    most: dict[str, int] = {"a": 0, "b": 0}
    b_done = asyncio.Event()

    async def hold(key: str, release: asyncio.Event | None) -> None:
        async with locks.hold(key):
            inside[key] += 1
            most[key] = max(most[key], inside[key])
            if release is not None:
                await release.wait()
            else:
                await asyncio.sleep(0)  # give the other holders of this key a chance to barge in
            inside[key] -= 1

    release_a = asyncio.Event()
    first_a = asyncio.create_task(hold("a", release_a))
    more_a = [asyncio.create_task(hold("a", None)) for _ in range(5)]

    async def b() -> None:
        await hold("b", None)
        b_done.set()

    task_b = asyncio.create_task(b())
    await b_done.wait()  # "b" got its lock while "a" is still held
    assert inside["a"] == 1 and len(locks) == 1
    release_a.set()
    await asyncio.gather(first_a, *more_a, task_b)
    assert most == {"a": 1, "b": 1}
    assert len(locks) == 0


async def test_an_entry_is_dropped_even_when_its_holder_fails_or_is_cancelled() -> None:
    locks = KeyedLocks()
    try:
        async with locks.hold(1):
            raise ValueError("boom")
    except ValueError:
        pass
    held = asyncio.Event()

    async def forever() -> None:
        async with locks.hold(2):
            held.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(forever())
    await held.wait()
    waiter = asyncio.create_task(forever())
    await asyncio.sleep(0)
    assert len(locks) == 1
    for t in (task, waiter):
        t.cancel()
    await asyncio.gather(task, waiter, return_exceptions=True)
    assert len(locks) == 0
