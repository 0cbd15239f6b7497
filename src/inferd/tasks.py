"""Stopping background tasks without letting one hold a process's shutdown.

On Python 3.11 ``asyncio.wait_for`` can lose a cancellation when its inner call finishes at the
same moment (fixed in 3.12): a task cancelled once may carry on. ``cancel_and_wait`` cancels
again every second until the tasks end, and gives up after ``seconds`` (the process is exiting;
what a task holds goes back by its lease or the broker's redelivery).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from typing import Any

log = logging.getLogger("inferd")


async def cancel_and_wait(tasks: Iterable[asyncio.Future[Any]], seconds: float = 10.0,
                          what: str = "tasks") -> None:
    """Cancel ``tasks`` and wait for them to end, cancelling again while they do not."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    pending = {t for t in tasks if not t.done()}
    while pending and (left := deadline - loop.time()) > 0:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(1.0, left))
    if pending:
        log.warning("%d %s did not stop within %g s; leaving them", len(pending), what, seconds)


async def bounded(call: Awaitable[Any], seconds: float, what: str) -> None:
    """Run ``call`` (a connection's close) for up to ``seconds``, then cancel it; errors are
    ignored: a peer that is away must not hold the shutdown."""
    task = asyncio.ensure_future(call)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        await cancel_and_wait([task], 1.0, what)
    elif not task.cancelled() and task.exception() is not None:
        log.debug("%s failed: %s", what, task.exception())
