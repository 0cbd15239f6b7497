"""The spool file: frames appended and read back, group syncs, orphans claimed, a damaged tail
ignored."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inferd import spool as spool_module
from inferd.spool import HEADER, Spool, claim_orphans, encode, read_frames


def test_frames_are_read_back_in_order_with_their_seqs(tmp_path: Path) -> None:
    spool = Spool.create(tmp_path)
    end1 = spool.append(1, [[1, "a"], [2, "b"]])
    end2 = spool.append(3, [[3, None, True, 1.5]])
    assert spool.size == end2 == os.path.getsize(spool.path)
    frames = spool.frames()
    assert [(f.first, f.last, f.records, f.end) for f in frames] == [
        (1, 2, [[1, "a"], [2, "b"]], end1),
        (3, 3, [[3, None, True, 1.5]], end2),
    ]
    assert [f.first for f in spool.frames(end1)] == [3]  # from an offset
    assert [f.first for f in spool.frames(0, max_records=1)] == [1]  # whole frames
    spool.close(remove=False)


def test_the_writers_records_are_written_as_arrays_of_their_fields(tmp_path: Path) -> None:
    """The writers append named tuples (``UsageRecord``, ``RequestRecord``): each is read back
    as the array of its fields, which their ``decode`` turns into the record again; a value
    JSON has no type for is written as its text."""
    from inferd.reqlog import RequestRecord
    from inferd.usage import UsageRecord

    usage = UsageRecord(1765148400.5, "req-1", "key-1", "m", "m#0", "chat", False, 200, None,
                        12, 5, 17, 1.25, None, 0, 0, 0.0, 0.001)
    request = RequestRecord(*([None] * len(RequestRecord._fields)))
    spool = Spool.create(tmp_path)
    spool.append(1, [usage, request, [Path("/x"), {"a": (1, 2)}]])
    [frame] = spool.frames()
    assert frame.records == [list(usage), list(request), ["/x", {"a": [1, 2]}]]
    assert UsageRecord(*frame.records[0]) == usage
    spool.close(remove=True)


def test_appends_are_synced_in_groups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(spool_module.os, "fdatasync", lambda fd: synced.append(fd) or real(fd))
    spool = Spool.create(tmp_path)
    assert not spool.unsynced
    for i in range(5):
        spool.append(i + 1, [[i]])
    assert spool.unsynced and synced == []  # appending never syncs
    spool.sync()
    assert not spool.unsynced and len(synced) == 1  # one sync for the five frames
    spool.close(remove=True)
    assert not spool.path.exists()


def test_a_damaged_or_cut_tail_is_ignored(tmp_path: Path) -> None:
    spool = Spool.create(tmp_path)
    spool.append(1, [[1], [2]])
    end = spool.append(3, [[3]])
    spool.close(remove=False)
    whole = spool.path.read_bytes()
    cut = encode(4, [[4], [5]])
    for tail in (
        cut[: len(cut) - 3],  # a write cut short by a crash
        cut[: HEADER.size - 2],  # even in its header
        cut[:-1] + b"X",  # a damaged payload (its CRC does not match)
        b"\0" * 4096,
    ):  # zeroes: a page the file system did not write
        spool.path.write_bytes(whole + tail)
        fd = os.open(spool.path, os.O_RDONLY)
        try:
            frames = list(read_frames(fd))
        finally:
            os.close(fd)
        assert [(f.first, f.records) for f in frames] == [(1, [[1], [2]]), (3, [[3]])]
        assert frames[-1].end == end


def test_a_damaged_frame_hides_the_frames_after_it(tmp_path: Path) -> None:
    spool = Spool.create(tmp_path)
    spool.append(1, [[1]])
    end = spool.append(2, [[2]])
    spool.append(3, [[3]])
    spool.close(remove=False)
    data = bytearray(spool.path.read_bytes())
    data[end - 2] ^= 0xFF  # inside the second frame's payload
    spool.path.write_bytes(bytes(data))
    fd = os.open(spool.path, os.O_RDONLY)
    try:
        assert [f.first for f in read_frames(fd)] == [1]
    finally:
        os.close(fd)


def test_truncate_empties_the_file(tmp_path: Path) -> None:
    spool = Spool.create(tmp_path)
    spool.append(1, [[1]])
    spool.truncate()
    assert spool.size == 0 and os.path.getsize(spool.path) == 0 and not spool.unsynced
    spool.append(2, [[2]])  # appends go on at the start
    assert [f.first for f in spool.frames()] == [2]
    spool.close(remove=True)


def test_only_spools_no_live_writer_holds_are_orphans(tmp_path: Path) -> None:
    live = Spool.create(tmp_path)
    live.append(1, [[1]])
    dead = Spool.create(tmp_path)
    dead.append(1, [[7]])
    dead.close(remove=False)  # its process is gone: the lock went with it
    orphans = claim_orphans(tmp_path)
    assert [o.id for o in orphans] == [dead.id]
    assert [f.records for f in orphans[0].frames(100)] == [[[7]]]
    assert claim_orphans(tmp_path) == []  # claimed: locked by this process now
    orphans[0].remove()
    assert not dead.path.exists() and live.path.exists()
    live.close(remove=True)
    assert claim_orphans(tmp_path) == [] and claim_orphans(tmp_path / "none") == []
