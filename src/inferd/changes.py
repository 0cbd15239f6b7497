"""Change notifications between the processes of a cluster, on Redis pub/sub.

When a key is created, changed or revoked, or a model or replica is added, changed or removed
(an engine registering itself included), the process that made the change publishes the topic
(``keys`` or ``catalog``) on ``<redis_prefix>:changes``, with what changed after a colon when
it says (``keys:42``: the key with id 42); every process applies that change at once instead of
on its next poll. The polls stay as the fallback when Redis is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import redis.asyncio as aioredis

log = logging.getLogger("inferd.changes")

# Called with what changed ("" when the message names only the topic).
Handler = Callable[[str], Awaitable[Any]]


class ChangeBus:
    """Publish change topics and run a handler per topic for every message received."""

    def __init__(self, url: str, prefix: str) -> None:
        self.redis: aioredis.Redis = aioredis.from_url(url)
        self.channel = f"{prefix}:changes"
        self._listener: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    async def publish(self, topic: str, what: str = "") -> None:
        """Tell every process; a Redis outage only delays the change until the next poll."""
        try:
            await self.redis.publish(self.channel, f"{topic}:{what}" if what else topic)
        except Exception as exc:  # the polls still carry the change
            log.warning("could not publish the %s change: %s", topic, exc)

    def announcer(self, topic: str) -> Callable[[str], Awaitable[None]]:
        """What tells every process that ``topic`` changed (``publish`` of that topic, with
        what changed: a key's id, or "" for the whole topic)."""
        return partial(self.publish, topic)

    def listen(self, handlers: dict[str, Handler]) -> None:
        self._listener = asyncio.create_task(self._listen(handlers), name="changes:listen")

    async def _listen(self, handlers: dict[str, Handler]) -> None:
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    self.subscribed.set()
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        topic, _, what = bytes(message["data"]).decode().partition(":")
                        handler = handlers.get(topic)
                        if handler is not None:
                            await _run(handler, what)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis restarted: subscribe again
                self.subscribed.clear()
                log.warning("change notifications interrupted: %s", exc)
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.redis.aclose()


async def _run(handler: Handler, what: str) -> None:
    try:
        await handler(what)
    except Exception:  # a reload that fails now is retried by the next poll
        log.warning("reload after a change notification failed", exc_info=True)
