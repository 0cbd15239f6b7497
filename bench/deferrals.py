"""What jobs held back by their key's rate limit cost ``inferd serve`` (SQLite, echo model).

A key with ``rpm`` requests a minute submits ``--jobs`` jobs; the process runs what the limit
lets through and defers the rest. After ``--warmup`` seconds (the backoff reaching its steady
pace) it is measured for ``--seconds``. Printed per run: the tries of deferred
jobs (runs stopped by the limit), the usage records written, the jobs completed and the
process's CPU (percent of one core over the window). Two runs: inferd's backoff (the
defaults), and a retry at every sweep (``INFERD_JOB_DEFER_SECONDS`` and ``..._MAX_SECONDS``
at 1 ms: the pace before the backoff, without its usage records).

    .venv/bin/python bench/deferrals.py [--jobs 306] [--rpm 2] [--warmup 60] [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from harness import start_inferd, stop

ADMIN = "sk-bench-admin-deferrals-0123456789"
ECHO = json.dumps([{"name": "echo", "kind": "echo"}])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tries(data: Path) -> int:
    with sqlite3.connect(data / "inferd.db") as db:
        return int(db.execute("SELECT COALESCE(SUM(deferrals), 0) FROM jobs").fetchone()[0])


def run(name: str, env: dict[str, str], jobs: int, rpm: int, warmup: float,
        seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="inferd-deferrals-") as tmp:
        data = Path(tmp)
        proc, url = start_inferd(data, ["--no-bundled"], {
            "INFERD_MODELS": ECHO, "INFERD_ADMIN_KEY": ADMIN, **env})
        try:
            with httpx.Client(base_url=url, timeout=60) as http:
                key = http.post("/admin/v1/keys", json={"name": "limited", "rpm": rpm},
                                headers={"Authorization": f"Bearer {ADMIN}"}).json()["key"]
                body = {"endpoint": "/v1/chat/completions", "body": {
                    "model": "echo", "messages": [{"role": "user", "content": "hi"}]}}
                for _ in range(jobs):
                    response = http.post("/v1/jobs", json=body,
                                         headers={"Authorization": f"Bearer {key}"})
                    assert response.status_code == 202, response.text
                time.sleep(warmup)
                before = tries(data)
                cpu, started = cpu_seconds(proc.pid), time.monotonic()
                time.sleep(seconds)
                cpu, elapsed = cpu_seconds(proc.pid) - cpu, time.monotonic() - started
                deferred = tries(data) - before
        finally:
            stop(proc)
        with sqlite3.connect(data / "inferd.db") as db:
            completed = db.execute("SELECT SUM(status = 'completed') FROM jobs").fetchone()[0]
            records = db.execute("SELECT COUNT(*) FROM metrics").fetchone()[0]
    return {"run": name, "jobs": jobs, "rpm": rpm, "measured_seconds": round(elapsed, 1),
            "deferred_tries_per_s": round(deferred / elapsed, 2),
            "cpu_percent": round(100 * cpu / elapsed, 1),
            "usage_records_in_all": records, "completed_in_all": completed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=306)
    parser.add_argument("--rpm", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=60.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    every_sweep = {"INFERD_JOB_DEFER_SECONDS": "0.001", "INFERD_JOB_DEFER_MAX_SECONDS": "0.001"}
    for name, env in (("backoff (defaults)", {}), ("retry at every sweep", every_sweep)):
        print(json.dumps(run(name, env, args.jobs, args.rpm, args.warmup,
                                    args.seconds)), flush=True)


if __name__ == "__main__":
    main()
