"""Usage survives ``kill -9`` of ``inferd serve``: a job's usage is committed with its result
(nothing to lose), and a sync request's usage is in the spool file once the writer thread has
taken it (within milliseconds), written to the database at the next start."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

from tests.helpers import InferdProcess, spooled_usage, wait_for

ECHO = json.dumps([{"name": "echo", "kind": "echo"}])
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "a b c d"}]}


def serve(tmp_path: Path, flush_seconds: float, port: int | None = None) -> InferdProcess:
    return InferdProcess(tmp_path, "--no-bundled", port=port, env={
        "INFERD_MODELS": ECHO, "INFERD_USAGE_FLUSH_SECONDS": str(flush_seconds)})


def usage_records(server: InferdProcess) -> list[dict[str, object]]:
    answer = httpx.get(server.url + "/admin/v1/usage/records", params={"limit": 1000},
                       timeout=30)
    assert answer.status_code == 200, answer.text
    records: list[dict[str, object]] = answer.json()["data"]
    return records


def test_kill_9_right_after_jobs_finish_loses_no_usage(tmp_path: Path) -> None:
    # the recorder would write its buffer only after an hour: a job's usage must not wait
    server = serve(tmp_path, flush_seconds=3600)
    with server, httpx.Client(base_url=server.url, timeout=30) as http:
        ids = []
        for _ in range(20):
            submitted = http.post("/v1/jobs", json={"endpoint": "/v1/chat/completions",
                                                    "body": CHAT})
            assert submitted.status_code == 202, submitted.text
            ids.append(submitted.json()["id"])
        for job_id in ids:
            wait_for(lambda job_id=job_id: http.get(f"/v1/jobs/{job_id}").json()["status"]
                     == "completed", what=f"job {job_id} completed")
        server.kill()
    with serve(tmp_path, flush_seconds=3600, port=server.port) as again:
        records = usage_records(again)
    assert sorted(str(r["request_id"]) for r in records) == sorted(ids)
    assert {(r["status"], r["prompt_tokens"], r["completion_tokens"]) for r in records} == {
        (200, 4, 4)}


def _pending(server: InferdProcess) -> float:
    text = httpx.get(server.url + "/metrics", timeout=30).text
    found = re.search(r"^inferd_usage_records_pending (\S+)$", text, re.MULTILINE)
    assert found, "the pending-records gauge is exported"
    return float(found.group(1))


def test_sync_usage_is_durable_after_the_flush_interval(tmp_path: Path) -> None:
    server = serve(tmp_path, flush_seconds=0.2)
    with server, httpx.Client(base_url=server.url, timeout=30) as http:
        for _ in range(20):
            answer = http.post("/v1/chat/completions", json=CHAT)
            assert answer.status_code == 200, answer.text
        wait_for(lambda: _pending(server) == 0, what="the buffer written")
        server.kill()
    with serve(tmp_path, flush_seconds=0.2, port=server.port) as again:
        records = usage_records(again)
    assert len(records) == 20
    assert all(r["endpoint"] == "chat" and r["total_tokens"] == 8 for r in records)


def test_records_pending_at_a_kill_9_are_written_after_the_restart(tmp_path: Path) -> None:
    """Records accepted and not yet written (the writer would wait an hour) are in the spool:
    a kill -9 loses none, the next start writes each once."""
    server = serve(tmp_path, flush_seconds=3600)
    with server, httpx.Client(base_url=server.url, timeout=30) as http:
        for _ in range(30):
            answer = http.post("/v1/chat/completions", json=CHAT)
            assert answer.status_code == 200, answer.text
        wait_for(lambda: spooled_usage(tmp_path) == 30, what="the 30 records spooled")
        assert _pending(server) == 30  # none written yet
        server.kill()
    with serve(tmp_path, flush_seconds=3600, port=server.port) as again:
        records = usage_records(again)  # reads once the dead process's spool is replayed
        assert len(records) == 30
        assert all(r["endpoint"] == "chat" and r["total_tokens"] == 8 for r in records)
        again.stop()  # a clean stop: its records are in, its spool is gone
    assert spooled_usage(tmp_path) == 0
    assert list((tmp_path / "spool" / "usage").glob("*.spool")) == []
    with serve(tmp_path, flush_seconds=3600, port=server.port) as third:
        assert len(usage_records(third)) == 30  # not one more: nothing replayed twice
