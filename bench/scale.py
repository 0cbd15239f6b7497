"""Scale-out figures on PostgreSQL + RabbitMQ, side by side in one run.

1. raw broker: persistent publishes with publisher confirms, then consume + ack (no inferd):
   the yardstick for what follows.
2. accepted jobs/s: ``POST /v1/jobs`` over two ``inferd gateway`` processes (202 = the row is
   committed and the broker confirmed the id), after ``--warmup`` jobs that are not measured.
3. completed jobs/s: two ``inferd worker --model echo`` processes (the echo engine answers at
   once), from the first submission until no job is pending or running, and the CPU time each
   role spent per job meanwhile (gateways, workers, PostgreSQL, RabbitMQ, this client); then
   the gateways alone (accepted jobs/s while the workers are paused with SIGSTOP), and the
   workers alone: that backlog drained after SIGCONT.
4. sync requests/s: ``/v1/chat/completions`` through one gateway, then two, to one
   ``inferd engine`` hosting the echo model (registered as the gateways' http replica).

    .venv/bin/python bench/scale.py [--jobs 2000] [--clients 32] [--messages 5000] [--warmup 300]
                                    [--group 1 32] [--no-sync]

``--group`` runs the jobs part once per value of ``INFERD_BROKER_GROUP`` (job ids per broker
message), in turns, each on a fresh cluster.

Needs PostgreSQL on 127.0.0.1:5432 (user postgres) and RabbitMQ on 127.0.0.1:5672 (guest).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aio_pika
import aiohttp
import asyncpg
import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent

AMQP = "amqp://guest:guest@127.0.0.1:5672/"
PG = "postgresql://postgres@127.0.0.1:5432"
ECHO = json.dumps([{"name": "echo", "kind": "echo"}])
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hello there"}]}


async def raw_broker(messages: int) -> tuple[float, float]:
    """(published/s, consumed/s) for persistent, confirmed messages on a durable queue."""
    connection = await aio_pika.connect_robust(AMQP)
    name = f"bench-raw-{uuid.uuid4().hex[:8]}"
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(name, durable=True,
                                            arguments={"x-max-priority": 10})
        body = b'{"id": "job_0123456789abcdef", "model": "echo", "priority": 0}'
        started = time.perf_counter()
        window = 256  # confirms in flight, as concurrent gateway requests would have

        async def publish(_: int) -> None:
            await channel.default_exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                 priority=5), routing_key=name)

        for first in range(0, messages, window):
            await asyncio.gather(*(publish(i) for i in range(first, min(messages,
                                                                         first + window))))
        published = messages / (time.perf_counter() - started)
        consumer = await connection.channel()
        await consumer.set_qos(prefetch_count=256)
        queue = await consumer.declare_queue(name, durable=True,
                                             arguments={"x-max-priority": 10})
        done = asyncio.Event()
        count = 0

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal count
            await message.ack()
            count += 1
            if count == messages:
                done.set()

        started = time.perf_counter()
        await queue.consume(on_message)
        await done.wait()
        consumed = messages / (time.perf_counter() - started)
        await consumer.queue_delete(name)
    return published, consumed


def cpu_seconds(procs: list[subprocess.Popen[bytes]]) -> dict[str, float]:
    """CPU seconds used so far, by role: the cluster's workers and gateways, PostgreSQL's
    and RabbitMQ's processes (all of them on this machine, from ``/proc``)."""
    tick = os.sysconf("SC_CLK_TCK")
    ours = {proc.pid: f"{proc.args[3]}s" for proc in procs}  # type: ignore[index]
    used: dict[str, float] = {"workers": 0.0, "gateways": 0.0, "postgres": 0.0,
                              "rabbitmq": 0.0}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        role = ours.get(int(entry)) or ("postgres" if b"postgres" in command
                                        else "rabbitmq" if b"beam" in command else None)
        if role in used:
            fields = stat.rpartition(")")[2].split()
            used[role] += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return used


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def cluster(tmp: Path, group: int = 1
            ) -> Iterator[tuple[dict[str, str], list[subprocess.Popen[bytes]]]]:
    db = f"inferd_bench_{uuid.uuid4().hex[:8]}"
    asyncio.run(_pg(f'CREATE DATABASE "{db}"'))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"),
           "INFERD_DATABASE_URL": f"{PG}/{db}", "INFERD_BROKER_URL": AMQP,
           "INFERD_BROKER_PREFIX": f"bench-{uuid.uuid4().hex[:8]}", "INFERD_MODELS": ECHO,
           "INFERD_JOB_CONCURRENCY": "16", "INFERD_HEALTH_CHECK_INTERVAL": "1",
           "INFERD_LOG_LEVEL": "warning", "INFERD_BROKER_GROUP": str(group),
           # the backlog built while the workers are paused is one key's (no auth)
           "INFERD_JOB_MAX_PENDING_PER_KEY": "100000000",
           "INFERD_JOB_MAX_BATCH_LINES_PER_KEY": "100000000"}
    subprocess.run([sys.executable, "-m", "inferd", "migrate"], env=env, check=True,
                   capture_output=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield env, procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                print(f"warning: {proc.args[3]} did not stop in 30 s; killed", file=sys.stderr)
                proc.kill()
        asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))


async def _pg(sql: str) -> None:
    conn = await asyncpg.connect(f"{PG}/test")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def start(env: dict[str, str], procs: list[subprocess.Popen[bytes]], tmp: Path,
          *args: str) -> str:
    port = free_port()
    data = tmp / f"{args[0]}-{port}"
    proc = subprocess.Popen([sys.executable, "-m", "inferd", *args, "--port", str(port),
                             "--data-dir", str(data)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(proc)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{args} did not start")


async def wait_idle(gateway: str) -> None:
    """Until no job is pending or running."""
    async with aiohttp.ClientSession(base_url=gateway) as http:
        while True:
            busy = 0
            for status in ("pending", "running"):
                async with http.get("/v1/jobs", params={"status": status,
                                                        "limit": 1}) as response:
                    busy += len((await response.json())["data"])
            if not busy:
                return
            await asyncio.sleep(0.02)


async def submit_jobs(gateways: list[str], jobs: int, clients: int,
                      wait: bool = True) -> tuple[float, float]:
    """(accepted/s, completed/s) for ``jobs`` chat jobs spread over the gateways.

    aiohttp as the client: it costs the shared CPU about a third of what httpx does.
    """
    body = orjson.dumps({"endpoint": "/v1/chat/completions", "body": CHAT})
    headers = {"Content-Type": "application/json"}
    sessions = [aiohttp.ClientSession(base_url=g, connector=aiohttp.TCPConnector(
        limit=clients)) for g in gateways]
    todo = iter(range(jobs))
    started = time.perf_counter()

    async def submitter(http: aiohttp.ClientSession) -> None:
        for _ in todo:
            async with http.post("/v1/jobs", data=body, headers=headers) as response:
                assert response.status == 202, await response.text()
                await response.read()

    await asyncio.gather(*(submitter(sessions[i % len(sessions)]) for i in range(clients)))
    accepted = jobs / (time.perf_counter() - started)
    if not wait:
        for session in sessions:
            await session.close()
        return accepted, 0.0
    await wait_idle(gateways[0])
    completed = jobs / (time.perf_counter() - started)
    async with sessions[0].get("/v1/jobs", params={"status": "failed", "limit": 1}) as response:
        failed = await response.json()
    assert not failed["data"], failed
    for session in sessions:
        await session.close()
    return accepted, completed


def create_batch(gateway: str, lines: int) -> float:
    """Seconds ``POST /v1/batches`` takes for a file of ``lines`` chat requests."""
    body = "\n".join(orjson.dumps({"custom_id": f"r{i}", "method": "POST",
                                    "url": "/v1/chat/completions", "body": CHAT}).decode()
                      for i in range(lines))
    with httpx.Client(base_url=gateway, timeout=300) as http:
        upload = http.post("/v1/files", files={"file": ("batch.jsonl", body.encode())},
                           data={"purpose": "batch"})
        assert upload.status_code == 200, upload.text
        started = time.perf_counter()
        created = http.post("/v1/batches", json={
            "input_file_id": upload.json()["id"], "endpoint": "/v1/chat/completions",
            "completion_window": "24h"})
        seconds = time.perf_counter() - started
        assert created.status_code == 200, created.text
    return seconds


async def sync_rps(gateways: list[str], seconds: float, clients: int) -> float:
    body = orjson.dumps(CHAT)
    headers = {"Content-Type": "application/json"}
    sessions = [aiohttp.ClientSession(base_url=g, connector=aiohttp.TCPConnector(
        limit=clients)) for g in gateways]
    for http in sessions:  # until each gateway routes to the engine
        for _ in range(300):
            async with http.post("/v1/chat/completions", data=body, headers=headers) as r:
                if r.status == 200:
                    break
            await asyncio.sleep(0.2)
    count, end = 0, time.perf_counter() + seconds

    async def client(http: aiohttp.ClientSession) -> None:
        nonlocal count
        while time.perf_counter() < end:
            async with http.post("/v1/chat/completions", data=body, headers=headers) as r:
                assert r.status == 200, await r.text()
                await r.read()
            count += 1

    started = time.perf_counter()
    await asyncio.gather(*(client(sessions[i % len(sessions)]) for i in range(clients)))
    rate = count / (time.perf_counter() - started)
    for session in sessions:
        await session.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=int, default=300,
                        help="jobs run to completion before the measured ones")
    parser.add_argument("--group", type=int, nargs="+", default=[1],
                        help="INFERD_BROKER_GROUP values to run the jobs part with, in turns")
    parser.add_argument("--batch", type=int, default=2000, help="lines of the batch created")
    parser.add_argument("--no-sync", action="store_true", help="skip the sync chat part")
    args = parser.parse_args()
    published, consumed = asyncio.run(raw_broker(args.messages))
    print(f"raw broker      publish+confirm {published:8.0f} msg/s   consume+ack "
          f"{consumed:8.0f} msg/s   ({args.messages} persistent messages)")
    for group in args.group:
        jobs_part(args, group)
    if not args.no_sync:
        sync_part(args)
    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


def jobs_part(args: argparse.Namespace, group: int) -> None:
    print(f"-- INFERD_BROKER_GROUP={group}")
    with tempfile.TemporaryDirectory() as tmp, cluster(Path(tmp), group) as (env, procs):
        for _ in range(2):
            start(env, procs, Path(tmp), "worker", "--model", "echo")
        gateways = [start(env, procs, Path(tmp), "gateway") for _ in range(2)]
        # warm-up, not measured: pools filled, statements prepared, queues declared
        asyncio.run(submit_jobs(gateways, args.warmup, args.clients))
        before, client_before = cpu_seconds(procs), time.process_time()
        accepted, completed = asyncio.run(submit_jobs(gateways, args.jobs, args.clients))
        spent = {role: seconds - before.get(role, 0.0)
                 for role, seconds in cpu_seconds(procs).items()}
        spent["client (this bench)"] = time.process_time() - client_before
        print(f"jobs            accepted {accepted:8.0f} jobs/s (2 gateways)   completed "
              f"{completed:8.0f} jobs/s (2 workers)   ({args.jobs} jobs, {args.clients} "
              "clients)")
        print("cpu per job     " + "   ".join(
            f"{role} {seconds / args.jobs * 1000:.2f} ms" for role, seconds in spent.items())
              + f"   total {sum(spent.values()) / args.jobs * 1000:.2f} ms")
        # the workers alone: a backlog built while they are paused, then drained
        workers = procs[:2]
        for worker in workers:
            worker.send_signal(signal.SIGSTOP)
        alone, _ = asyncio.run(submit_jobs(gateways, args.jobs, args.clients, wait=False))
        print(f"jobs            accepted {alone:8.0f} jobs/s (2 gateways, workers paused)")
        started = time.perf_counter()
        for worker in workers:
            worker.send_signal(signal.SIGCONT)
        asyncio.run(wait_idle(gateways[0]))
        print(f"backlog         drained  {args.jobs / (time.perf_counter() - started):8.0f} "
              f"jobs/s (2 workers, gateways idle)")
        # a batch's creation: its rows committed and every id confirmed by the broker
        for worker in workers:
            worker.send_signal(signal.SIGSTOP)
        seconds = create_batch(gateways[0], args.batch)
        for worker in workers:
            worker.send_signal(signal.SIGCONT)
        print(f"batch           created  in {seconds:5.2f} s   ({args.batch} lines, one "
              f"gateway, workers paused)")
        asyncio.run(wait_idle(gateways[0]))


def sync_part(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, cluster(Path(tmp)) as (env, procs):
        start(env, procs, Path(tmp), "engine", "--no-bundled")
        gateways = [start(env, procs, Path(tmp), "gateway") for _ in range(2)]
        one = asyncio.run(sync_rps(gateways[:1], args.seconds, args.clients))
        two = asyncio.run(sync_rps(gateways, args.seconds, args.clients))
        print(f"sync chat       1 gateway {one:8.0f} req/s   2 gateways {two:8.0f} req/s   "
              f"ratio {two / one:4.2f}   (one echo engine, {args.clients} clients, "
              f"{args.seconds:.0f} s each)")


if __name__ == "__main__":
    main()
