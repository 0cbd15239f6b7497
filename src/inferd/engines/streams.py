"""Small helpers for async streams of chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar

T = TypeVar("T")


async def primed(stream: AsyncIterator[T]) -> AsyncIterator[T]:
    """Start ``stream`` now and return an iterator over all of it.

    Errors raised before the first item (unknown model, prompt too long, upstream refused)
    surface here, while the caller can still answer with a proper HTTP status instead of a
    stream that breaks after ``200 OK``.
    """
    try:
        first = await anext(stream)
    except StopAsyncIteration:
        return _empty()
    return _chain(first, stream)


async def _empty() -> AsyncIterator[T]:
    return
    yield


async def _chain(first: T, rest: AsyncIterator[T]) -> AsyncIterator[T]:
    try:
        yield first
        async for item in rest:
            yield item
    finally:
        aclose = getattr(rest, "aclose", None)
        if aclose is not None:
            await aclose()
