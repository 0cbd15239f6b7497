"""Crash consistency: ``kill -9`` of ``inferd serve`` at random points of job and batch
processing, in a loop; then every invariant of the job system is checked in the database.

Each round starts ``inferd serve`` (the echo engine: jobs take tens of milliseconds), submits
jobs and a batch while earlier rounds' jobs run again, and kills the process (SIGKILL) at a
random moment of the ``--window`` seconds after the round's first job was accepted: during
recovery, a claim, a run, a result's commit, a batch's creation or its finalisation. After the
last kill a clean start drains everything, and the database must show:

- every accepted job (answered 202) and every batch line completed, with the right result;
- each job's result stored once, billed once (one usage record, committed with the result);
- its event log one attempt's: a first ``status``/``reset`` event naming the job's last
  attempt, then exactly the result's text in token events;
- no job left ``pending`` or ``running``; no orphaned row (events, webhook attempts, batch
  jobs, file parts, usage of a job that does not exist);
- each batch ``completed``, its counts adding up, its output file one line per request.

It prints a line per round and the totals (kills, jobs accepted, jobs lost = 0) as JSON last;
it exits 1 when an invariant does not hold.

    .venv/bin/python bench/crash.py [--kills 50] [--database sqlite|postgresql] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from harness import start_inferd, stop

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
ECHO = json.dumps([{"name": "echo", "kind": "echo", "echo_delay": 0.005}])
BATCH_LINES = 4


@dataclass
class Totals:
    kills: int = 0
    jobs_accepted: int = 0
    batches_accepted: int = 0
    jobs_in_database: int = 0
    jobs_completed: int = 0
    jobs_lost: int = 0
    jobs_rerun: int = 0  # jobs a kill interrupted that ran again
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


@dataclass
class Accepted:
    jobs: dict[str, str] = field(default_factory=dict)  # job id -> the words sent
    batches: dict[str, list[str]] = field(default_factory=dict)  # batch id -> custom ids
    counter: int = 0

    def words(self) -> str:
        self.counter += 1
        n = self.counter
        return " ".join(f"j{n}w{i}" for i in range(3 + n % 6))


def chat(words: str) -> dict[str, Any]:
    return {"model": "echo", "messages": [{"role": "user", "content": words}]}


async def submit_jobs(http: httpx.AsyncClient, accepted: Accepted, problems: list[str]) -> None:
    while True:
        words = accepted.words()
        try:
            response = await http.post("/v1/jobs", json={"endpoint": "/v1/chat/completions",
                                                         "body": chat(words)})
        except httpx.HTTPError:
            return  # the process is gone: this submission is not known to be accepted
        if response.status_code != 202:
            problems.append(f"job submission answered {response.status_code}: "
                            f"{response.text[:200]}")
            return
        accepted.jobs[response.json()["id"]] = words
        await asyncio.sleep(0.05)


async def submit_batch(http: httpx.AsyncClient, accepted: Accepted, problems: list[str]) -> None:
    custom = [f"c{uuid.uuid4().hex[:10]}" for _ in range(BATCH_LINES)]
    lines = [json.dumps({"custom_id": c, "method": "POST", "url": "/v1/chat/completions",
                         "body": chat(f"batch line {c}")}) for c in custom]
    try:
        upload = await http.post("/v1/files", data={"purpose": "batch"},
                                 files={"file": ("in.jsonl", "\n".join(lines).encode())})
        if upload.status_code != 200:
            problems.append(f"file upload answered {upload.status_code}: {upload.text[:200]}")
            return
        batch = await http.post("/v1/batches", json={
            "input_file_id": upload.json()["id"], "endpoint": "/v1/chat/completions",
            "completion_window": "24h"})
    except httpx.HTTPError:
        return
    if batch.status_code != 200:
        problems.append(f"batch creation answered {batch.status_code}: {batch.text[:200]}")
        return
    accepted.batches[batch.json()["id"]] = custom


async def one_round(url: str, kill_after: float, kill: Any, accepted: Accepted,
                    problems: list[str]) -> None:
    """Submit work; ``kill_after`` seconds after the first job of the round was accepted (so
    that every kill finds work under way, however slow the machine), ``kill()`` the server."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        known = len(accepted.jobs)
        work = [asyncio.create_task(submit_batch(http, accepted, problems)),
                asyncio.create_task(submit_jobs(http, accepted, problems))]
        deadline = time.monotonic() + 60
        # a count another task raises, not an event
        while len(accepted.jobs) == known and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        await asyncio.sleep(kill_after)
        kill()
        for task in work:
            task.cancel()  # a request whose answer never came is not counted as accepted
        await asyncio.gather(*work, return_exceptions=True)


async def drain(url: str, accepted: Accepted, within: float = 600.0) -> None:
    """Until no job is pending or running and every accepted batch has finished."""
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        while time.monotonic() < deadline:
            busy = 0
            for status in ("pending", "running"):
                page = (await http.get("/v1/jobs", params={"status": status, "limit": 1})).json()
                busy += len(page["data"])
            batches = [(await http.get(f"/v1/batches/{b}")).json()["status"]
                       for b in accepted.batches]
            if not busy and all(s in ("completed", "failed", "cancelled") for s in batches):
                return
            await asyncio.sleep(0.3)
    raise RuntimeError("the jobs did not drain in time")


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


async def check(database_url: str, accepted: Accepted, totals: Totals) -> None:
    """Every invariant of the module docstring, read from the database itself."""
    problems = totals.problems
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            async def rows(sql: str) -> list[Any]:
                return list((await conn.execute(text(sql))).all())

            jobs = {r.id: r for r in await rows(
                "SELECT id, status, attempts, request, result, batch_id, custom_id FROM jobs")}
            usage = Counter(r.request_id for r in await rows(
                "SELECT request_id FROM metrics WHERE request_id IS NOT NULL"))
            events: dict[str, list[Any]] = {}
            for r in await rows("SELECT job_id, seq, kind, data FROM job_events "
                                "ORDER BY job_id, seq"):
                events.setdefault(r.job_id, []).append(r)
            batches = {r.id: r for r in await rows(
                "SELECT id, status, total, input_file_id, output_file_id, error_file_id "
                "FROM batches")}
            files = {r.id: r for r in await rows("SELECT id, lines FROM files")}
            parts: dict[str, list[Any]] = {}
            for r in await rows("SELECT file_id, part, data FROM file_parts ORDER BY part"):
                parts.setdefault(r.file_id, []).append(r)
            webhook_jobs = {r.job_id for r in await rows("SELECT job_id FROM webhook_attempts")}
    finally:
        await engine.dispose()

    totals.jobs_in_database = len(jobs)
    totals.jobs_completed = sum(j.status == "completed" for j in jobs.values())
    totals.jobs_rerun = sum(j.attempts > 1 for j in jobs.values())
    lost = [i for i in accepted.jobs if i not in jobs or jobs[i].status != "completed"]
    totals.jobs_lost = len(lost)
    if lost:
        problems.append(f"accepted jobs not completed: {lost[:10]}")
    for job_id, job in jobs.items():
        if job.status != "completed":
            problems.append(f"job {job_id} ended {job.status} (attempts {job.attempts})")
            continue
        words = _json(job.request)["messages"][-1]["content"]
        if accepted.jobs.get(job_id, words) != words:
            problems.append(f"job {job_id} stored another request")
        content = _json(job.result)["choices"][0]["message"]["content"]
        if content != words:
            problems.append(f"job {job_id}: result {content!r} for {words!r}")
        if usage[job_id] != 1:
            problems.append(f"job {job_id} has {usage[job_id]} usage records, not 1")
        log = events.get(job_id, [])
        first = _json(log[0].data) if log else {}
        if not log or log[0].kind not in ("status", "reset") or (
                first.get("attempt") != job.attempts):
            problems.append(f"job {job_id}: event log does not start with attempt "
                            f"{job.attempts}: {[e.kind for e in log[:3]]}")
        tokens = "".join(_json(e.data)["text"] for e in log if e.kind == "token")
        if tokens != content:
            problems.append(f"job {job_id}: events say {tokens!r}, the result {content!r}")
        if [e.seq for e in log] != sorted({e.seq for e in log}):
            problems.append(f"job {job_id}: event sequence numbers out of order")
    orphans = {
        "events": set(events) - set(jobs),
        "webhook attempts": webhook_jobs - set(jobs),
        "batch jobs": {j.batch_id for j in jobs.values() if j.batch_id} - set(batches),
        "file parts": set(parts) - set(files),
        "job usage": {r for r in usage if str(r).startswith("job_")} - set(jobs),
        "batch files": {f for b in batches.values() for f in (
            b.input_file_id, b.output_file_id, b.error_file_id) if f} - set(files),
    }
    for what, ids in orphans.items():
        if ids:
            problems.append(f"orphaned {what}: {sorted(ids)[:10]}")
    for batch_id, batch in batches.items():
        members = [j for j in jobs.values() if j.batch_id == batch_id]
        if batch.status != "completed" or batch.total != len(members):
            problems.append(f"batch {batch_id}: {batch.status}, total {batch.total}, "
                            f"{len(members)} jobs")
            continue
        if batch.error_file_id is not None or batch.output_file_id not in parts:
            problems.append(f"batch {batch_id}: output {batch.output_file_id}, "
                            f"errors {batch.error_file_id}")
            continue
        content = b"".join(base64.b64decode(p.data) for p in parts[batch.output_file_id])
        custom = [json.loads(line)["custom_id"] for line in content.splitlines()]
        if sorted(custom) != sorted(j.custom_id for j in members) or len(set(custom)) != len(
                custom) or files[batch.output_file_id].lines != batch.total:
            problems.append(f"batch {batch_id}: output lines {custom} do not match its jobs")
        expected = accepted.batches.get(batch_id)
        if expected is not None and sorted(expected) != sorted(custom):
            problems.append(f"batch {batch_id}: accepted lines {expected}, output {custom}")
    missing = set(accepted.batches) - set(batches)
    if missing:
        problems.append(f"accepted batches missing: {sorted(missing)}")


async def database(kind: str) -> tuple[str, str, Any]:
    """(URL for inferd, URL for the checks, cleanup) of a fresh database."""
    if kind == "postgresql":
        import asyncpg

        name = f"inferd_crash_{uuid.uuid4().hex[:10]}"
        conn = await asyncpg.connect(PG_ADMIN)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

        async def drop() -> None:
            conn = await asyncpg.connect(PG_ADMIN)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()

        url = f"postgresql://postgres@127.0.0.1:5432/{name}"
        return url, f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}", drop
    return "", "", None


async def main(kills: int, kind: str, seed: int, window: float) -> Totals:
    rng = random.Random(seed)
    totals = Totals()
    accepted = Accepted()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="inferd-crash-") as tmp:
        data = Path(tmp)
        server_url, check_url, drop = await database(kind)
        if not check_url:
            check_url = f"sqlite+aiosqlite:///{data / 'inferd.db'}"
        env = {"INFERD_MODELS": ECHO, "INFERD_AUTH": "off",
               "INFERD_JOB_LEASE_SECONDS": "3", "INFERD_JOB_SWEEP_SECONDS": "0.3",
               "INFERD_JOB_CONCURRENCY": "2", "INFERD_JOB_EVENT_FLUSH_SECONDS": "0.02",
               # kills must not use up a job's attempts: each must complete in the end; the
               # kills are not the jobs' doing, so none may be quarantined either
               "INFERD_JOB_MAX_ATTEMPTS": "1000", "INFERD_JOB_MAX_CRASHES": "100"}
        if server_url:
            env["INFERD_DATABASE_URL"] = server_url
        try:
            for round_no in range(1, kills + 1):
                proc, url = await asyncio.to_thread(start_inferd, data, ["--no-bundled"], env)
                kill_after = rng.uniform(0.0, window)
                before = (len(accepted.jobs), len(accepted.batches))
                await one_round(url, kill_after, proc.kill, accepted, totals.problems)
                await asyncio.to_thread(proc.wait, 10)
                totals.kills += 1
                print(f"kill {round_no}/{kills} at {kill_after:.2f} s: accepted "
                      f"{len(accepted.jobs) - before[0]} jobs, "
                      f"{len(accepted.batches) - before[1]} batches", flush=True)
            proc, url = await asyncio.to_thread(start_inferd, data, ["--no-bundled"], env)
            try:  # a last round that is not killed: more work, then everything drains
                async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                    await submit_batch(http, accepted, totals.problems)
                await drain(url, accepted)
            finally:
                await asyncio.to_thread(stop, proc)
            await check(check_url, accepted, totals)
        finally:
            if drop is not None:
                await drop()
    totals.jobs_accepted = len(accepted.jobs) + BATCH_LINES * len(accepted.batches)
    totals.batches_accepted = len(accepted.batches)
    totals.seconds = round(time.monotonic() - started, 1)
    return totals


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--window", type=float, default=1.5,
                        help="each kill comes at a random moment of this many seconds after "
                        "the round's first accepted job")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    print(f"crash loop: {args.kills} kills on {args.database}, seed {seed}", flush=True)
    result = asyncio.run(main(args.kills, args.database, seed, args.window))
    for problem in result.problems[:50]:
        print("PROBLEM:", problem)
    print(f"kills {result.kills}, jobs accepted {result.jobs_accepted} "
          f"({result.batches_accepted} batches), jobs in the database "
          f"{result.jobs_in_database}, completed {result.jobs_completed}, run again after a "
          f"kill {result.jobs_rerun}, jobs lost {result.jobs_lost}, problems "
          f"{len(result.problems)}, {result.seconds} s")
    print(json.dumps({k: v for k, v in asdict(result).items() if k != "problems"}
                     | {"problems": len(result.problems)}))
    sys.exit(1 if result.problems else 0)
