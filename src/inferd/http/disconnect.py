"""Noticing a client that goes away, for the raw ASGI handlers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from starlette.types import Receive


class ClientWatch:
    """Whether the client disconnected while the watched block ran."""

    gone: bool = False


@contextmanager
def cancel_on_disconnect(receive: Receive) -> Iterator[ClientWatch]:
    """Cancel the current task if ``http.disconnect`` arrives while the block runs.

    The request body must have been read: the one watcher task takes every later message.
    The block tells a disconnect from another cancellation by ``ClientWatch.gone``.
    """
    task = asyncio.current_task()
    assert task is not None
    client = ClientWatch()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        client.gone = True
        task.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        yield client
    finally:
        watcher.cancel()
