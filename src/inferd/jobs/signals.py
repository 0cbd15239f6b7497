"""Wake-ups for whoever follows a job in this process (SSE streams, waiters).

A follower registers with ``follow`` for as long as it follows; the job's event exists only
while someone follows it, so jobs finished by another process (whose end is seen by polling,
never notified here) leave nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class Follower:
    """One follower of one key."""

    def __init__(self, signals: Signals, key: str) -> None:
        self._signals = signals
        self.key = key

    def changed(self) -> asyncio.Event:
        """Take this before reading the state, then ``wait`` on it: no wake-up is missed."""
        return self._signals._events.setdefault(self.key, asyncio.Event())

    @staticmethod
    async def wait(event: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)


class Signals:
    """Per-key events, set by ``notify`` and dropped once nobody follows the key."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._followers: dict[str, int] = {}

    @contextlib.contextmanager
    def follow(self, key: str) -> Iterator[Follower]:
        self._followers[key] = self._followers.get(key, 0) + 1
        try:
            yield Follower(self, key)
        finally:
            left = self._followers.pop(key) - 1
            if left:
                self._followers[key] = left
            else:
                self._events.pop(key, None)

    def notify(self, key: str) -> None:
        event = self._events.pop(key, None)
        if event is not None:
            event.set()

    def __len__(self) -> int:
        """Keys holding an event (followed right now)."""
        return len(self._events)
