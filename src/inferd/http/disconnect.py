"""Noticing a client that goes away, for the raw ASGI handlers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from starlette.types import Receive, Scope

# The server's scope extension (``scope["extensions"]``, ``inferd.http.server``): what calls
# back when the connection is lost, so that a request needs no task of its own to notice.
WATCH = "inferd.disconnect"


class Watch(Protocol):
    """The extension's object: ``add`` a callback for the connection's loss, ``discard`` it."""

    def add(self, gone: Callable[[], None]) -> None: ...

    def discard(self, gone: Callable[[], None]) -> None: ...


class ClientWatch:
    """Whether the client disconnected while the watched block ran."""

    gone: bool = False


@contextmanager
def cancel_on_disconnect(receive: Receive, scope: Scope | None = None) -> Iterator[ClientWatch]:
    """Cancel the current task if ``http.disconnect`` arrives while the block runs.

    The request body must have been read: the one watcher task takes every later message
    (under inferd's server, which tells of a lost connection through the scope's ``WATCH``
    extension, no task is needed). The block tells a disconnect from another cancellation by
    ``ClientWatch.gone``.
    """
    task = asyncio.current_task()
    assert task is not None
    client = ClientWatch()
    connection: Watch | None = (scope.get("extensions") or {}).get(WATCH) if scope else None
    if connection is not None:

        def gone() -> None:
            client.gone = True
            task.cancel()

        connection.add(gone)
        try:
            yield client
        finally:
            connection.discard(gone)
        return

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
