"""A batched, spooled, bounded writer: records accepted on the event loop, written to their
store by a thread of their own, in batches sized by the backlog, surviving ``kill -9``.

``SpooledWriter.record`` appends a record to a queue (no I/O, no await, no lock): that is all the
request path pays. A writer thread, with an event loop and a store connection of its own (the
``Sink``), does the rest:

1. every ``SPOOL_SECONDS`` (10 ms) it takes what the queue holds, numbers it (``seq``) and
   appends it to the spool file in one ``write`` (``inferd.spool``): from then on a crash of the
   process does not lose it; every ``sync_seconds`` (100 ms) it ``fdatasync``\\s the file, after
   which a crash of the machine does not either;
2. when ``batch_size`` records wait, or ``flush_seconds`` have passed, or a reader asked
   (``flush``), it writes everything waiting in batches of up to ``batch_size`` records, each
   in one transaction that also stores the last seq written for this spool (``Sink.write``);
3. once everything the spool holds is in the store, the file is emptied (at most every
   ``ROTATE_BYTES``) or, on a clean stop, deleted.

At start the spools no live process holds (their process was killed) are replayed: the store's
last seq for each says where to resume, so a record is never written twice.

Memory is bounded: the queue holds at most ``max_pending`` records (beyond, ``record`` drops the
record and counts it in ``dropped``: only a writer thread that cannot even append to a local
file lets it fill), and the thread holds at most ``max_pending`` records decoded: while the
store lags (or is away) further records stay in the spool file only, and are read back from it
when the store catches up. Without a spool directory (or when it cannot be written) the
records live in memory only, bounded the same way.

A write the store refuses for its data (not ``transient``) is retried one record at a time, so
a record no column can hold is dropped, logged and counted in ``rejected`` and never holds the
others back. A ``transient`` failure (the store is away) keeps the batch for a retry after
``retry_seconds`` (doubling up to ``MAX_RETRY_SECONDS``).

The writer is generic: a ``Sink`` factory (called on the writer thread, where its connections
live) and a ``decode`` for records read back from the spool (a record is written as the JSON
array of a tuple's fields) are all it needs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from inferd.spool import Frame, Orphan, Spool, claim_orphans

log = logging.getLogger("inferd.batchwriter")

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)

# How often the writer thread moves the queue to the spool (seconds): about what a kill -9 can
# lose beyond what the thread could not get the CPU to write.
SPOOL_SECONDS = 0.01
# A spool file whose records are all in the store is emptied once it is this long.
ROTATE_BYTES = 4 * 1024 * 1024
MAX_RETRY_SECONDS = 5.0


class Sink(Protocol[T_contra]):
    """Where a writer's records go; lives on the writer thread (its own connections)."""

    async def write(self, records: Sequence[T_contra], spool: str | None, last: int) -> None:
        """Store ``records`` and, in the same transaction, ``last`` as the last seq of
        ``spool`` stored (when ``spool`` is given)."""

    async def last(self, spool: str) -> int:
        """The last seq of ``spool`` stored (0: none)."""

    async def forget(self, spool: str) -> None:
        """Drop what is kept about ``spool`` (its file is gone)."""

    async def close(self) -> None: ...


def _always(_exc: BaseException) -> bool:
    return True


class _Waiter:
    __slots__ = ("future", "loop", "target")

    def __init__(
        self, target: int, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]
    ) -> None:
        self.target, self.loop, self.future = target, loop, future


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class SpooledWriter(Generic[T]):
    """Takes records on the event loop; a thread spools them and writes them in batches."""

    def __init__(
        self,
        sink: Callable[[], Awaitable[Sink[T]]],
        *,
        decode: Callable[[Any], T],
        directory: Path | None = None,
        name: str = "records",
        flush_seconds: float = 1.0,
        batch_size: int = 2000,
        max_pending: int = 100_000,
        sync_seconds: float = 0.1,
        retry_seconds: float = 0.5,
        transient: Callable[[BaseException], bool] = _always,
    ) -> None:
        self._open_sink = sink
        self._decode = decode
        self.directory = directory
        self.name = name
        self.flush_seconds = flush_seconds
        self.batch_size = batch_size
        self.max_pending = max_pending
        self.sync_seconds = sync_seconds
        self.retry_seconds = retry_seconds
        self.transient = transient
        self._queue: collections.deque[T] = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self._flush_asked = False
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._waiters: list[_Waiter] = []
        self._waiters_lock = threading.Lock()
        # The event loop thread's counts (only it writes them).
        self.accepted = 0  # records queued
        self.dropped = 0  # records refused at the door: the queue was full
        # The writer thread's counts (only it writes them).
        self.done = 0  # accepted records written, or refused by the store
        self.written = 0  # of which written
        self.rejected = 0  # of which refused by the store (dropped and logged)
        self.replayed = 0  # records of dead processes' spools written at start
        self.failures = 0  # writes that failed for the store being away
        self.discarded = 0  # records dropped from memory, the store behind and no spool
        self.flushes = 0  # batches written
        self._failed_at = 0  # ``failures`` when the last write was tried
        self._retry_due = False
        # The writer thread's state.
        self._spool: Spool | None = None
        self._mark_id: str | None = None  # the id the store keeps the last seq under
        self._seq = 0  # the last seq given
        self._held: collections.deque[Frame] = collections.deque()  # spooled, not yet stored
        self._held_count = 0
        self._held_end = 0  # the spool offset up to which ``_held`` has the frames
        self._orphans: list[Orphan] = []
        self._retry_at = 0.0
        self._retry_wait = retry_seconds
        self._last_write = 0.0
        self._last_sync = 0.0
        self._last_drop_log = 0.0

    # -- the event loop's side -----------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Records accepted and not yet in the store (queued, spooled, or being written)."""
        return self.accepted - self.done

    @property
    def queued(self) -> int:
        """Records accepted and not yet taken by the writer thread (in memory)."""
        return len(self._queue)

    @property
    def held(self) -> int:
        """Records the writer thread holds in memory, spooled and not yet in the store."""
        return self._held_count

    @property
    def replaying(self) -> int:
        """Spools of dead processes still to replay."""
        return len(self._orphans)

    @property
    def spool_path(self) -> Path | None:
        spool = self._spool
        return spool.path if spool is not None else None

    def record(self, record: T) -> None:
        """Accept one record (it is in the spool file within ``SPOOL_SECONDS``)."""
        queue = self._queue
        if len(queue) >= self.max_pending:
            self._drop(1)
            return
        queue.append(record)
        self.accepted += 1

    def record_many(self, records: Sequence[T]) -> None:
        room = self.max_pending - len(self._queue)
        if room < len(records):
            self._drop(len(records) - max(room, 0))
            records = records[: max(room, 0)]
        self._queue.extend(records)
        self.accepted += len(records)

    def _drop(self, count: int) -> None:
        self.dropped += count
        now = time.monotonic()
        if now - self._last_drop_log >= 10.0:
            self._last_drop_log = now
            log.error(
                "%s: %d records waiting to be spooled, dropping new ones (%d so far)",
                self.name,
                len(self._queue),
                self.dropped,
            )

    async def start(self) -> None:
        """Start the writer thread (it replays the spools of dead processes first)."""
        if self._thread is not None:
            return
        self._stopping = False
        self._started.clear()
        self._thread = threading.Thread(
            target=self._main, name=f"inferd-{self.name}-writer", daemon=True
        )
        self._thread.start()
        await asyncio.to_thread(self._started.wait)

    async def flush(self) -> None:
        """Return once every record accepted before the call is in the store (and the spools
        of dead processes replayed), or a write was tried and failed (the store is away; the
        records stay spooled for the next try)."""
        target = self.accepted
        if self._thread is None or (self.done >= target and not self._orphans):
            return
        loop = asyncio.get_running_loop()
        waiter = _Waiter(target, loop, loop.create_future())
        with self._waiters_lock:
            self._waiters.append(waiter)
        self._flush_asked = True
        self._wake.set()
        await waiter.future

    async def close(self) -> None:
        """Write everything accepted and stop the thread. What the store does not take by
        then stays in the spool file, replayed at the next start."""
        thread = self._thread
        if thread is None:
            return
        self._stopping = True
        self._wake.set()
        await asyncio.to_thread(thread.join)
        self._thread = None

    # -- the writer thread ---------------------------------------------------------------------
    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException:  # pragma: no cover - a bug: say so, and let flushes go
            log.exception("%s writer stopped", self.name)
            self._started.set()
            self._notify(failed=True)

    def _open_spool(self) -> None:
        if self.directory is None:
            return
        try:
            self._orphans = claim_orphans(self.directory)
            self._spool = Spool.create(self.directory)
            self._mark_id = self._spool.id
        except OSError as exc:
            log.error(
                "%s: cannot spool to %s, records are kept in memory only: %s",
                self.name,
                self.directory,
                exc,
            )
            self._spool = None

    async def _run(self) -> None:
        self._open_spool()
        try:
            sink = await self._open_sink()
        except Exception:
            log.exception("%s: cannot open the store, nothing will be written", self.name)
            self._started.set()
            self._close_spool(complete=False)
            raise
        self._started.set()
        self._last_sync = self._last_write = time.monotonic()
        try:
            while True:
                stopping = self._stopping
                try:
                    await self._step(sink, stopping)
                except Exception:  # a bug: say so, keep the thread (and the spool) going
                    log.exception("%s writer: unexpected error", self.name)
                    self._notify(failed=True)
                    if stopping:
                        break
                    self._wake.wait(MAX_RETRY_SECONDS)
                if stopping and not self._queue:
                    break
                self._wake.wait(SPOOL_SECONDS)
                self._wake.clear()
        finally:
            complete = not self._held_count and not self._behind()
            spool_id = self._close_spool(complete=complete)
            if spool_id is not None:
                with contextlib.suppress(Exception):  # its file is gone: its last seq too
                    await sink.forget(spool_id)
            for orphan in self._orphans:
                orphan.release()
            self._orphans = []
            await sink.close()
            self._notify(failed=True)  # nobody waits for a thread that is gone

    async def _step(self, sink: Sink[T], stopping: bool) -> None:
        """One turn: spool what is queued, sync it when due, write what is due."""
        self._take()
        now = time.monotonic()
        spool = self._spool
        if (
            spool is not None
            and spool.unsynced
            and (stopping or now - self._last_sync >= self.sync_seconds)
        ):
            self._sync(spool)
            self._last_sync = now
        asked = self._flush_asked or bool(self._waiters)
        if now < self._retry_at and not stopping:
            return
        if self._orphans:
            await self._replay(sink)
        if self._held_count or self._behind():
            if (
                stopping
                or asked
                or self._held_count >= self.batch_size
                or self._retry_due
                or now - self._last_write >= self.flush_seconds
            ):
                self._flush_asked = False
                await self._write_all(sink)
        elif asked:
            self._flush_asked = False
            self._notify(failed=False)

    def _close_spool(self, *, complete: bool) -> str | None:
        """Close the spool (deleted when ``complete``); its id when it was deleted."""
        spool, self._spool = self._spool, None
        if spool is None:
            return None
        if not complete:
            log.warning(
                "%s: %d records not written, kept in %s for the next start",
                self.name,
                self.pending,
                spool.path,
            )
        spool.close(remove=complete)
        return spool.id if complete else None

    def _sync(self, spool: Spool) -> None:
        try:
            spool.sync()
        except OSError as exc:  # pragma: no cover - the disk failed under us
            log.error("%s: cannot sync the spool %s: %s", self.name, spool.path, exc)

    def _behind(self) -> bool:
        """Whether the spool has records not held in memory (to read back from the file)."""
        spool = self._spool
        return spool is not None and self._held_end < spool.size

    def _take(self) -> None:
        """Move what the queue holds to the spool (and to memory, when not behind)."""
        queue = self._queue
        while queue:
            count = min(len(queue), self.batch_size)  # a frame is at most a batch
            popleft = queue.popleft
            records = [popleft() for _ in range(count)]
            first = self._seq + 1
            self._seq += count
            spool = self._spool
            if spool is not None:
                caught_up = self._held_end == spool.size
                try:
                    end = spool.append(first, records)
                except OSError as exc:
                    # The records it has beyond what is held stay in it, replayed at the
                    # next start (the marks go on under its id: nothing is written twice).
                    log.error(
                        "%s: cannot append to the spool %s, records are kept in memory only: %s",
                        self.name,
                        spool.path,
                        exc,
                    )
                    self._close_spool(complete=False)
                else:
                    if caught_up and self._held_count + count <= self.max_pending:
                        self._held.append(Frame(first, records, end))
                        self._held_count += count
                        self._held_end = end
                    continue
            # memory only: bounded by dropping the oldest
            self._held.append(Frame(first, records, 0))
            self._held_count += count
            while self._held_count > self.max_pending:
                old = self._held.popleft()
                self._held_count -= len(old.records)
                self.done += len(old.records)
                self.discarded += len(old.records)
                log.error(
                    "%s: the store is behind and there is no spool: %d records dropped",
                    self.name,
                    len(old.records),
                )

    def _read_back(self) -> None:
        """Hold the next frames from the spool file (the store caught up with memory)."""
        spool = self._spool
        if spool is None or self._held:
            return
        for frame in spool.frames(self._held_end, self.batch_size):
            self._held.append(
                Frame(frame.first, [self._decode(r) for r in frame.records], frame.end)
            )
            self._held_count += len(frame.records)
            self._held_end = frame.end
        if not self._held and self._held_end < spool.size:  # pragma: no cover - unreadable
            log.error(
                "%s: the spool %s is unreadable from offset %d: %d bytes skipped",
                self.name,
                spool.path,
                self._held_end,
                spool.size - self._held_end,
            )
            self._held_end = spool.size

    def _batch(self) -> list[Frame]:
        """Whole frames from the front of what is held, about ``batch_size`` records."""
        frames: list[Frame] = []
        count = 0
        held = self._held
        while held and (not frames or count + len(held[0].records) <= self.batch_size):
            frame = held.popleft()
            frames.append(frame)
            count += len(frame.records)
        self._held_count -= count
        return frames

    async def _write_all(self, sink: Sink[T]) -> None:
        """Write what is held and what the spool has beyond it, batch by batch; stop at the
        first failure (kept for a retry)."""
        while True:
            self._read_back()
            if not self._held:
                break
            frames = self._batch()
            if not await self._write_frames(sink, frames):
                for frame in reversed(frames):  # unwritten: back to the front
                    self._held.appendleft(frame)
                    self._held_count += len(frame.records)
                break
            self._take()  # keep the spool current while the store takes the backlog
        self._rotate()
        failed = self._failed_at != self.failures
        self._failed_at = self.failures
        self._notify(failed=failed)
        self._retry_due = failed  # then due again at the retry, whatever the interval
        if not failed:
            self._last_write = time.monotonic()

    def _rotate(self) -> None:
        spool = self._spool
        if (
            spool is not None
            and not self._held
            and self._held_end == spool.size
            and spool.size >= ROTATE_BYTES
        ):
            try:
                spool.truncate()
            except OSError as exc:  # pragma: no cover - the disk failed under us
                log.error("%s: cannot empty the spool %s: %s", self.name, spool.path, exc)
                return
            self._held_end = 0

    def _spool_id(self) -> str | None:
        return self._mark_id

    async def _write_frames(self, sink: Sink[T], frames: list[Frame]) -> bool:
        """Write the frames' records; False when the store is away (nothing counted)."""
        records = [r for f in frames for r in f.records]
        spool = self._spool_id()
        try:
            await sink.write(records, spool, frames[-1].last)
        except Exception as exc:
            if self._away(exc, len(records)):
                return False
            # the store refuses something in the batch: find it, one record at a time
            for index, frame in enumerate(frames):
                for offset, record in enumerate(frame.records):
                    try:
                        await sink.write([record], spool, frame.first + offset)
                    except Exception as one:
                        if self._away(one, 1):
                            # keep the rest: this frame from this record on, and the others
                            rest = [
                                Frame(frame.first + offset, frame.records[offset:], frame.end),
                                *frames[index + 1 :],
                            ]
                            frames[:] = rest
                            return False
                        self.rejected += 1
                        self.done += 1
                        log.error(
                            "%s: record refused by the store, dropped: %r (%s: %s)",
                            self.name,
                            record,
                            one.__class__.__name__,
                            str(one).splitlines()[0] if str(one) else "",
                        )
                    else:
                        self.written += 1
                        self.done += 1
            self.flushes += 1
            self._retry_wait = self.retry_seconds
            return True
        self.written += len(records)
        self.done += len(records)
        self.flushes += 1
        self._retry_wait = self.retry_seconds
        return True

    def _away(self, exc: BaseException, count: int) -> bool:
        if not self.transient(exc):
            return False
        self.failures += 1
        self._retry_at = time.monotonic() + self._retry_wait
        log.warning(
            "%s: could not write %d records (spooled, retried in %.1f s): %s",
            self.name,
            count,
            self._retry_wait,
            exc,
        )
        self._retry_wait = min(self._retry_wait * 2, MAX_RETRY_SECONDS)
        return True

    async def _replay(self, sink: Sink[T]) -> None:
        """Write the records of dead processes' spools that their store does not have."""
        while self._orphans:
            orphan = self._orphans[0]
            try:
                last = await sink.last(orphan.id)
                while True:
                    frames = orphan.frames(self.batch_size)
                    if not frames:
                        break
                    records = [
                        self._decode(r)
                        for f in frames
                        for r in f.records[max(0, last - f.first + 1) :]
                    ]
                    if records:
                        await sink.write(records, orphan.id, frames[-1].last)
                        self.replayed += len(records)
                        last = frames[-1].last
                    orphan.offset = frames[-1].end
                    self._take()
            except Exception as exc:
                if self._away(exc, 0):
                    self._notify(failed=True)
                    return
                log.error(
                    "%s: cannot replay the spool %s, left in place: %s", self.name, orphan.path, exc
                )
                orphan.release()
                self._orphans.pop(0)
                continue
            log.info("%s: replayed the spool %s", self.name, orphan.path)
            orphan.remove()
            self._orphans.pop(0)
            with contextlib.suppress(Exception):
                await sink.forget(orphan.id)
        self._notify(failed=False)

    def _notify(self, *, failed: bool) -> None:
        """Wake the flushes that are satisfied (or all of them after a failure)."""
        if not self._waiters:
            return
        with self._waiters_lock:
            keep = []
            for waiter in self._waiters:
                if failed or (self.done >= waiter.target and not self._orphans):
                    with contextlib.suppress(RuntimeError):  # its loop is closed
                        waiter.loop.call_soon_threadsafe(_resolve, waiter.future)
                else:
                    keep.append(waiter)
            self._waiters = keep
