"""Group commit: calls that arrive while one database round trip is in flight wait and go
together in the next one.

There is no timer: a lone call runs at once, and under load each round trip carries every call
that arrived during the previous one (up to ``max_size``), so the database sees one statement
or transaction per group instead of one per call. Each caller gets its own result, or the
exception of its group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Grouped(Generic[T, R]):
    """``await grouped(item)`` runs ``run([..., item, ...])`` and returns this item's result.

    ``run`` gets the items of one group in arrival order and returns one result per item, in
    the same order.
    """

    def __init__(self, run: Callable[[list[T]], Awaitable[Sequence[R]]],
                 max_size: int = 500) -> None:
        self.run = run
        self.max_size = max_size
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._draining: asyncio.Task[None] | None = None

    async def __call__(self, item: T) -> R:
        return await self._add(item)

    def _add(self, item: T) -> asyncio.Future[R]:
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, done))
        if self._draining is None or self._draining.done():
            self._draining = asyncio.create_task(self._drain())
        return done

    def post(self, item: T) -> None:
        """Add ``item`` to the next group without waiting for it (its result and any error
        are dropped): for writes that only save work later."""
        self._add(item).add_done_callback(lambda f: f.cancelled() or f.exception())

    async def _drain(self) -> None:
        while self._waiting:
            group = self._waiting[:self.max_size]
            del self._waiting[:self.max_size]
            try:
                results = await self.run([item for item, _ in group])
            except Exception as exc:  # the whole group failed: tell each caller
                for _, done in group:
                    if not done.done():
                        done.set_exception(exc)
                continue
            except BaseException:  # cancelled (shutting down): nobody waits forever
                for _, done in [*group, *self._waiting]:
                    done.cancel()
                self._waiting.clear()
                raise
            for (_, done), result in zip(group, results, strict=True):
                if not done.done():
                    done.set_result(result)
