"""Per-key caps on unfinished work: jobs (``max_pending_per_key``) and batch lines
(``max_batch_lines_per_key``); a submission past a cap gets 429.

The count is the database's (pending and running jobs of the key), kept per key for up to a
second with the submissions this process added meanwhile: a key far below its cap costs one
count a second, and near the cap every submission is counted exactly. Gateways count apart,
so together they may let a key pass its cap by what each accepted within that second.
"""

from __future__ import annotations

import asyncio
import time

from inferd.auth.principal import Principal
from inferd.errors import RateLimited
from inferd.settings import JobSettings
from inferd.store.jobs import JobStore

FRESH_SECONDS = 1.0
MAX_KEYS = 10_000  # keys whose count is kept; past it the cache starts over


class PendingCaps:
    """Checks a key's unfinished jobs and batch lines against its caps."""

    def __init__(self, store: JobStore, settings: JobSettings) -> None:
        self.store = store
        self.settings = settings
        self._counts: dict[tuple[str | None, bool], tuple[int, float]] = {}
        # one count at a time per key: concurrent submissions share it
        self._counting: dict[tuple[str | None, bool], asyncio.Future[int]] = {}

    async def check_jobs(self, principal: Principal, adding: int = 1) -> None:
        """429 ``too_many_pending_jobs`` when ``adding`` jobs would pass the key's cap."""
        cap = self.settings.max_pending_per_key
        if not await self._fits(principal.key_id, False, adding, cap):
            raise RateLimited(f"This API key has {cap} or more unfinished jobs (the most it "
                              "may have); submit more once some have finished.",
                              retry_after=5.0, code="too_many_pending_jobs")

    async def check_batch(self, principal: Principal, lines: int) -> None:
        """429 ``too_many_pending_batch_lines`` when a batch of ``lines`` would pass the
        key's cap on the unfinished lines of its batches."""
        cap = self.settings.max_batch_lines_per_key
        if not await self._fits(principal.key_id, True, lines, cap):
            raise RateLimited(f"This batch of {lines} requests would give this API key more "
                              f"than {cap} unfinished batch requests (the most it may have); "
                              "create it once earlier batches have progressed.",
                              retry_after=30.0, code="too_many_pending_batch_lines")

    async def _fits(self, owner: str | None, batch: bool, adding: int, cap: int) -> bool:
        key, now = (owner, batch), time.monotonic()
        known = self._counts.get(key)
        if known is None or now - known[1] > FRESH_SECONDS or known[0] + adding > cap:
            if len(self._counts) >= MAX_KEYS:
                self._counts.clear()
            known = (await self._count(key), now)
        if known[0] + adding > cap:
            self._counts[key] = known
            return False
        self._counts[key] = (known[0] + adding, known[1])
        return True

    async def _count(self, key: tuple[str | None, bool]) -> int:
        counting = self._counting.get(key)
        if counting is None:
            counting = asyncio.ensure_future(self.store.count_unfinished(key[0], batch=key[1]))
            self._counting[key] = counting
            counting.add_done_callback(lambda _: self._counting.pop(key, None))
        return await asyncio.shield(counting)
