"""Which in-process models are in memory: load on demand, unload when idle or over budget.

A model configured ``load: on_demand`` loads on its first request (that request waits; others,
to other models, do not), unloads after ``keep_alive`` idle seconds (``-1``: never), and when
more than ``max_loaded_models`` are loaded the least recently used idle one is unloaded. A
model with requests running is never unloaded, so the budget may be exceeded while all are busy.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Resident(Protocol):
    """An engine that can be loaded and unloaded while the process runs (llama.cpp's)."""

    name: str
    state: str  # "unloaded" | "loading" | "loaded"
    active: int
    last_used: float
    spec: Any
    threads: int  # llama.cpp threads of each loaded copy

    async def load(self) -> None: ...

    async def unload(self) -> bool: ...


class Residency:
    """The budget of loaded models one process shares: the composition root builds one and
    hands it to every in-process engine it builds (``inferd.engines.build_engine``)."""

    def __init__(self, max_loaded: int = 0) -> None:
        self.max_loaded = max_loaded  # 0: no limit
        self.models: list[Resident] = []

    def register(self, model: Resident) -> None:
        if model not in self.models:
            self.models.append(model)

    def forget(self, model: Resident) -> None:
        if model in self.models:
            self.models.remove(model)

    async def make_room(self, arriving: Resident) -> None:
        """Unload least recently used idle models until ``arriving`` fits the budget."""
        if not self.max_loaded:
            return
        while True:
            loaded = [m for m in self.models if m is not arriving and m.state == "loaded"]
            if len(loaded) < self.max_loaded:
                return
            idle = sorted((m for m in loaded if m.active == 0), key=lambda m: m.last_used)
            if not idle or not await idle[0].unload():
                return


class IdleTimer:
    """Unloads a model ``keep_alive`` seconds after its last request ended."""

    def __init__(self, model: Resident, keep_alive: float) -> None:
        self.model = model
        self.keep_alive = keep_alive
        self._task: asyncio.Task[None] | None = None

    def touch(self) -> None:
        self.model.last_used = time.monotonic()
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self.keep_alive >= 0 and self.model.active == 0:
            self._task = asyncio.get_running_loop().create_task(self._expire())

    async def _expire(self) -> None:
        await asyncio.sleep(self.keep_alive)
        self._task = None
        if self.model.active == 0:
            await self.model.unload()

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
