"""Grouped acknowledgements of job messages: a job's message is acknowledged once its outcome
is committed, never earlier, and the acknowledgements due together share one frame."""

from __future__ import annotations

import asyncio
from typing import Any


class Acks:
    """The acknowledgements of one consumer channel, grouped without a timer.

    Every message delivered on the channel is ``open`` until it is settled. ``ack`` marks one
    done; on the next turn of the event loop the done messages are acknowledged: the longest
    run of them at the start of the open ones (by delivery tag) with one ``multiple`` ack, which
    covers exactly those, and any other done one by itself. A message still running (a long
    job) never holds back the others' acknowledgements, and only done messages are covered.
    """

    def __init__(self, channel: Any) -> None:
        self.channel = channel  # aiormq's channel: tags are its own, from 1 after a reconnect
        self.open: set[int] = set()
        self.done: set[int] = set()
        self.sent = 0  # basic.ack frames sent (for tests and the curious)
        self._flushing = False
        self._frames: list[tuple[int, bool]] = []
        self._sender: asyncio.Task[None] | None = None

    def delivered(self, tag: int | None) -> None:
        if tag is not None:
            self.open.add(tag)

    def settled(self, tag: int | None) -> None:
        """Settled by itself (rejected, or acknowledged at once): called once its own
        frame is sent, so that no ``multiple`` ack covered it meanwhile."""
        self.open.discard(tag or 0)
        self.done.discard(tag or 0)

    def ack(self, tag: int | None) -> None:
        if tag is None or tag not in self.open:
            return
        self.done.add(tag)
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flushing = False
        head: int | None = None
        for tag in sorted(self.open):
            if tag not in self.done:
                break
            head = tag
        alone = [t for t in self.done if head is None or t > head]
        self.open -= self.done
        self.done.clear()
        self._frames += ([(head, True)] if head is not None else []) + [(t, False)
                                                                          for t in alone]
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send())

    async def _send(self) -> None:
        """One frame after the other, in order: a ``multiple`` ack never overtakes a single
        one below it (the broker refuses a tag acknowledged twice)."""
        while self._frames:
            tag, multiple = self._frames.pop(0)
            self.sent += 1
            try:
                await self.channel.basic_ack(tag, multiple=multiple)
            except Exception:  # the channel is gone: the broker redelivers (see ack)
                self._frames.clear()
