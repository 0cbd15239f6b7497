"""``Grouped``: calls arriving while a group runs go together in the next one, each caller
gets its own result, a failed group fails only its own callers."""

from __future__ import annotations

import asyncio

import pytest

from inferd.store.groups import Grouped


async def test_calls_during_a_run_share_the_next_group_and_get_their_own_results() -> None:
    groups: list[list[int]] = []
    started, release = asyncio.Event(), asyncio.Event()

    async def run(items: list[int]) -> list[int]:
        groups.append(items)
        if len(groups) == 1:
            started.set()
            await release.wait()  # the first group is in flight while the others arrive
        return [i * 10 for i in items]

    grouped: Grouped[int, int] = Grouped(run)
    first = asyncio.create_task(grouped(1))
    await asyncio.wait_for(started.wait(), 30)  # it starts alone: no timer holds it back
    assert groups == [[1]]
    later = [asyncio.create_task(grouped(i)) for i in (2, 3, 4)]
    await asyncio.sleep(0)  # the three tasks run up to their wait, in creation order
    release.set()
    assert await first == 10
    assert await asyncio.gather(*later) == [20, 30, 40]
    assert groups == [[1], [2, 3, 4]]


async def test_a_failed_group_fails_its_callers_and_the_next_group_runs() -> None:
    calls = 0

    async def run(items: list[str]) -> list[str]:
        nonlocal calls
        calls += 1
        if "bad" in items:
            raise ValueError("refused")
        return items

    grouped: Grouped[str, str] = Grouped(run, max_size=2)
    with pytest.raises(ValueError, match="refused"):
        await grouped("bad")
    assert await grouped("good") == "good"
    results = await asyncio.gather(*(grouped(x) for x in ("a", "b", "c")))
    assert results == ["a", "b", "c"]
    assert calls == 4  # max_size 2: a, b together, then c
