"""An append-only spool file: the records a writer has accepted, on local disk before they are
in their store, read back after a crash.

A spool is one file, ``<directory>/<id>.spool``, owned by one process: it holds an exclusive
``flock`` on it for as long as it is open, so a file nobody holds is an orphan (its process
died) that the next process to start replays (``claim_orphans``). The file is a sequence of
frames, each one group of records written by one ``write``::

    magic "ISP1" | payload length (u32) | CRC-32 of the payload (u32) | first seq (u64) | payload

The payload is a JSON array of the records (each a JSON array of its fields). Records are
numbered by ``seq`` in the order they were accepted (1, 2, ...), so a store that keeps the last
seq it committed per spool id (in the same transaction as the records) can replay a spool
without writing any record twice. A frame cut short or damaged (a crash in the middle of a
``write``, a torn page after a power loss) ends the readable part: it and whatever follows are
ignored.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import orjson

log = logging.getLogger("inferd.spool")

MAGIC = b"ISP1"
HEADER = struct.Struct("<4sIIQ")
SUFFIX = ".spool"
# A frame longer than this is taken for damage, not read (a sane frame holds a few thousand
# records of a few hundred bytes).
MAX_FRAME = 256 * 1024 * 1024


class Frame(NamedTuple):
    """One group of records: their first seq, the records, and where the frame ends."""

    first: int
    records: list[Any]
    end: int

    @property
    def last(self) -> int:
        return self.first + len(self.records) - 1


def encode(first: int, records: list[Any]) -> bytes:
    """One frame's bytes."""
    payload = orjson.dumps(records, default=_plain)
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload), first) + payload


def _plain(value: object) -> object:
    """What orjson does not write itself: a record (a named tuple) as the array of its fields,
    anything else as its text."""
    if isinstance(value, tuple):
        return list(value)
    return str(value)


def read_frames(fd: int, offset: int = 0, max_records: int | None = None) -> Iterator[Frame]:
    """The frames from ``offset`` on, until the end of the file or the first frame that is
    cut short or damaged; after ``max_records`` records (whole frames), stops."""
    count = 0
    while max_records is None or count < max_records:
        header = os.pread(fd, HEADER.size, offset)
        if len(header) < HEADER.size:
            return
        magic, length, crc, first = HEADER.unpack(header)
        if magic != MAGIC or length > MAX_FRAME:
            return
        payload = os.pread(fd, length, offset + HEADER.size)
        if len(payload) < length or zlib.crc32(payload) != crc:
            return
        try:
            records = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(records, list):
            return
        offset += HEADER.size + length
        count += len(records)
        yield Frame(first, records, offset)


def _lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class Spool:
    """A spool file open for appending (this process holds its lock)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.id = path.name.removesuffix(SUFFIX)
        self._fd = fd
        self.size = os.fstat(fd).st_size
        self.synced = self.size  # bytes known to be on disk (fsync'd)

    @classmethod
    def create(cls, directory: Path) -> Spool:
        """A new, empty spool with a new id in ``directory`` (made if missing)."""
        directory.mkdir(parents=True, exist_ok=True)
        while True:
            path = directory / f"{secrets.token_hex(8)}{SUFFIX}"
            try:
                fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # pragma: no cover - 64 random bits
                continue
            if not _lock(fd):  # pragma: no cover - nobody else knows the name yet
                os.close(fd)
                continue
            return cls(path, fd)

    def append(self, first: int, records: list[Any]) -> int:
        """Write one frame (one ``write``: the kernel has it once this returns, so a crash of
        the process no longer loses it); returns the offset where it ends."""
        data = encode(first, records)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self.size += len(data)
        return self.size

    @property
    def unsynced(self) -> bool:
        return self.synced < self.size

    def sync(self) -> None:
        """Make what was appended durable against a crash of the machine (``fdatasync``)."""
        size = self.size
        os.fdatasync(self._fd)
        self.synced = size

    def frames(self, offset: int = 0, max_records: int | None = None) -> list[Frame]:
        return list(read_frames(self._fd, offset, max_records))

    def truncate(self) -> None:
        """Empty the file (everything in it is in the store)."""
        os.ftruncate(self._fd, 0)
        os.fdatasync(self._fd)
        self.size = self.synced = 0

    def close(self, *, remove: bool) -> None:
        """Close (and delete, when everything in it is in the store); the lock goes with
        the descriptor."""
        if remove:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        os.close(self._fd)


class Orphan:
    """The spool of a process that is gone, claimed (locked) by this one to replay it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.id = path.name.removesuffix(SUFFIX)
        self.fd = fd
        self.offset = 0  # replayed up to here

    def frames(self, max_records: int) -> list[Frame]:
        return list(read_frames(self.fd, self.offset, max_records))

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self.fd)

    def release(self) -> None:
        os.close(self.fd)


def claim_orphans(directory: Path) -> list[Orphan]:
    """The spools in ``directory`` no live process holds, locked for this one, oldest first."""
    if not directory.is_dir():
        return []
    found: list[tuple[float, Orphan]] = []
    for path in directory.glob(f"*{SUFFIX}"):
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:  # replayed and removed by another process meanwhile
            continue
        if not _lock(fd):  # a live process's
            os.close(fd)
            continue
        if not path.exists():  # removed between our open and our lock
            os.close(fd)
            continue
        found.append((os.fstat(fd).st_mtime, Orphan(path, fd)))
    found.sort(key=lambda pair: pair[0])
    return [orphan for _, orphan in found]
