"""The SQLite data directory fills up or turns read-only under a running ``inferd serve``: writes
answer a clear 503 (and keep the connection), ``/ready`` turns 503 while reads still work, the
database is not corrupted, and everything recovers when the storage does (a full disk without a
restart): jobs submitted afterwards complete and the jobs accepted earlier are not lost.

The data directory is a small tmpfs mounted by the test (root only: skipped otherwise). As root,
``chmod`` does not stop writes, and a mount cannot turn read-only while SQLite holds its files
open for writing, so the read-only case restarts the server on a read-only mount (after a
``kill -9``, as when the storage fails under it), then turns the mount writable again under
that same process.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import InferdProcess, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")

ENV = {"INFERD_MODELS": json.dumps([{"name": "echo", "kind": "echo"}]),
       "INFERD_UNREADY_AFTER_FAILED_WRITES": "2",
       # a job whose result could not be stored runs again soon after its lease lapses
       "INFERD_JOB_LEASE_SECONDS": "3", "INFERD_JOB_SWEEP_SECONDS": "0.5"}


def mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"mount {' '.join(args)}: {result.stderr.strip()}")


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    try:
        mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    except RuntimeError as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def server(tmp_path: Path, data: Path) -> InferdProcess:
    return InferdProcess(data, "--no-bundled", env=ENV, log_path=tmp_path / "inferd.log")


def submit(http: httpx.Client, text: str) -> httpx.Response:
    return http.post("/v1/jobs", json={"endpoint": "/v1/chat/completions", "body": {
        "model": "echo", "max_tokens": 8, "messages": [{"role": "user", "content": text}]}})


def accepted(response: httpx.Response) -> str:
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def completed(http: httpx.Client, job_ids: list[str]) -> None:
    """Wait until every job completed (each exactly once: one row each)."""
    def done() -> bool:
        statuses = [http.get(f"/v1/jobs/{job_id}").json()["status"] for job_id in job_ids]
        assert "failed" not in statuses and "cancelled" not in statuses, statuses
        return all(status == "completed" for status in statuses)

    wait_for(done, within=180, what=f"{len(job_ids)} jobs completing")


def assert_storage_503(response: httpx.Response, fault: str) -> None:
    assert response.status_code == 503, (response.status_code, response.text)
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == "store_unavailable" and error["type"] == "service_unavailable"
    assert fault in error["message"], error["message"]
    assert response.headers.get("retry-after")
    assert response.headers.get("connection", "").lower() != "close"  # kept alive


def ready(http: httpx.Client) -> tuple[int, dict[str, Any]]:
    response = http.get("/ready")
    body: dict[str, Any] = response.json()
    return response.status_code, body


def check_database(path: Path, job_ids: list[str]) -> None:
    """No corruption, and each accepted job stored once, completed."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute("SELECT id, status FROM jobs").fetchall()
    finally:
        conn.close()
    stored = dict(rows)
    assert len(rows) == len(stored)
    assert {job_id: stored.get(job_id) for job_id in job_ids} == {
        job_id: "completed" for job_id in job_ids}


def fill(directory: Path) -> Path:
    """Write a file until the file system is full."""
    filler = directory / "filler"
    # unbuffered, and the error of any step taken as the disk being full (a buffered file keeps
    # the bytes the full disk refused, and its close raises on writing them again)
    with suppress(OSError), filler.open("wb", buffering=0) as out:
        while True:
            out.write(b"\0" * 65536)
    return filler


def test_a_full_disk_gives_503_then_recovers_without_a_restart(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "data", "16m") as data, server(tmp_path, data) as proc, \
            httpx.Client(base_url=proc.url, timeout=60) as http:
        jobs = [accepted(submit(http, f"before {i}")) for i in range(3)]
        completed(http, jobs)
        filler = fill(data)
        prompt = "x" * 100_000  # a job needs new pages: the free pages run out fast
        refused = None
        for i in range(300):
            response = submit(http, f"{i} {prompt}")
            assert response.status_code in {202, 503}, (response.status_code, response.text)
            if response.status_code == 503:
                refused = response
                break
            jobs.append(accepted(response))  # accepted: must not be lost
        assert refused is not None, "the database never ran out of space"
        assert_storage_503(refused, "full")
        # reads still work
        assert http.get(f"/v1/jobs/{jobs[0]}").json()["status"] == "completed"

        def unready() -> dict[str, Any] | None:
            submit(http, prompt)  # writes keep failing
            status, body = ready(http)
            return body if status == 503 else None

        body = wait_for(unready, within=60, what="/ready noticing the failing writes")
        assert body["store"] is True and body["store_writes"] is False
        assert body["storage_fault"] == "full"

        filler.unlink()  # space returns
        wait_for(lambda: ready(http)[0] == 200, within=60, what="/ready recovering")
        after = [accepted(submit(http, f"after {i}")) for i in range(3)]
        completed(http, jobs + after)
        jobs += after
        proc.stop()
        check_database(data / "inferd.db", jobs)


def test_a_read_only_data_directory_gives_503_then_recovers_without_a_restart(
        tmp_path: Path) -> None:
    with tmpfs(tmp_path / "data", "64m") as data:
        with server(tmp_path, data) as proc, \
                httpx.Client(base_url=proc.url, timeout=60) as http:
            jobs = [accepted(submit(http, f"before {i}")) for i in range(2)]
            completed(http, jobs)
            # killed, so that SQLite's -wal and -shm files stay: a WAL database can be opened
            # (read-only) on a read-only mount only with them
            proc.kill()
        mount("-o", "remount,ro", str(data))
        with server(tmp_path, data) as proc, \
                httpx.Client(base_url=proc.url, timeout=60) as http:
            assert http.get(f"/v1/jobs/{jobs[0]}").json()["status"] == "completed"
            assert_storage_503(submit(http, "refused"), "read-only")

            def unready() -> dict[str, Any] | None:
                submit(http, "refused")
                status, body = ready(http)
                return body if status == 503 else None

            body = wait_for(unready, within=60, what="/ready noticing the failing writes")
            assert body["store_writes"] is False and body["storage_fault"] == "read_only"

            mount("-o", "remount,rw", str(data))  # writable again, under the same process
            wait_for(lambda: ready(http)[0] == 200, within=60, what="/ready recovering")
            after = [accepted(submit(http, f"after {i}")) for i in range(3)]
            completed(http, jobs + after)
            jobs += after
            proc.stop()
        check_database(data / "inferd.db", jobs)
