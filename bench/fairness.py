"""Fair queueing between keys, against first come, first served, side by side in one run.

An upstream that behaves like an engine with a fixed number of slots (``--slots``: requests
beyond them wait in its own queue, first come, first served; each slot generates a token every
``--token-ms``) serves one model through three ``inferd serve`` gateways: one with fair
queueing (the replica's ``options.capacity`` is its slot count, so requests past it wait at the
gateway, fair between keys), one with fair queueing and a reserve (``options.capacity`` one
slot less, ``options.reserve: 1``: the last slot is for a key with nothing running), and one
with ``fair_queue: false`` (every request goes straight to the engine, which queues it behind
all the others: FIFO).

First the quiet key alone (on the fair gateway, nothing else running): it sends one short
request (4 tokens) at a time for ``--seconds``. Then in each gateway's phase (``--seconds``) a
noisy key keeps ``--noisy`` long streamed generations (``--long-tokens``) under way at all
times, and the quiet key sends its short requests one at a time again; the quiet key's time to
first token (p50, p95) is printed for each, with its p95's ratio to its p95 alone.

Then the overhead of the queue when it is never full: requests/s of ``--clients`` concurrent
clients on a model whose replica answers at once, with a capacity it never reaches (every
request is admitted on the fast path) against the gateway with queueing off; the best of
``--rounds`` alternating rounds of ``--overhead-seconds`` each, and the ratio. The same in
process, without HTTP (so nothing else blurs it): ``Router.chat`` calls per second on an echo
replica with a capacity never reached, against queueing off (best of ``--rounds`` runs of
``--router-calls``).

    .venv/bin/python bench/fairness.py [--seconds 20] [--slots 4] [--noisy 32]
        [--long-tokens 50] [--token-ms 10] [--clients 16] [--overhead-seconds 5] [--rounds 3]
        [--router-calls 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import yaml

import harness
from inferd.engines.echo import EchoEngine
from inferd.routing.fairqueue import Priority, Queueing
from inferd.routing.replica import Replica
from inferd.routing.router import Router
from inferd.schemas.openai import ChatCompletionRequest
from inferd.settings import ModelSpec

ADMIN_KEY = "sk-bench-admin-fairness-0123456789abcdef"
SHORT_TOKENS = 4


# -- the upstream: an engine with a fixed number of slots -----------------------------------------
def _chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
    event = {"id": "chatcmpl-slots", "object": "chat.completion.chunk", "created": 1700000000,
             "model": "fake", "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                           "finish_reason": finish}]}
    data = b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


def _json(writer: asyncio.StreamWriter, value: Any) -> None:
    body = json.dumps(value).encode()
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


class Engine:
    """``/slotted/v1``: ``slots`` requests generate at once, the others wait in turn;
    ``/fast/v1``: answers at once; ``GET /state``: requests running and waiting."""

    def __init__(self, slots: int, token_seconds: float) -> None:
        self.slots = asyncio.Semaphore(slots)
        self.token_seconds = token_seconds
        self.running = 0
        self.waiting = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                target = head.split(b" ", 2)[1]
                if not head.startswith(b"POST"):
                    _json(writer, {"running": self.running, "waiting": self.waiting}
                          if target == b"/state" else {"object": "list", "data": []})
                    continue
                request = json.loads(body)
                tokens = int(request.get("max_tokens") or 16)
                if target.startswith(b"/fast/"):
                    _json(writer, {
                        "id": "chatcmpl-fast", "object": "chat.completion",
                        "created": 1700000000, "model": "fake",
                        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                                     "message": {"role": "assistant", "content": "ok"}}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                  "total_tokens": 2}})
                    continue
                if not await self._generate(tokens, reader, writer):
                    return
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    async def _generate(self, tokens: int, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> bool:
        self.waiting += 1
        try:
            await self.slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            writer.write(_chunk({"role": "assistant", "content": ""}))
            for _ in range(tokens):
                await asyncio.sleep(self.token_seconds)
                if reader.at_eof():  # the client left: the slot is free again
                    return False
                writer.write(_chunk({"content": "w "}))
                await writer.drain()
            done = b"data: [DONE]\n\n"
            writer.write(_chunk({}, "stop") + b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
            await writer.drain()
            return True
        finally:
            self.running -= 1
            self.slots.release()


async def run_upstream(port: int, slots: int, token_seconds: float) -> None:
    engine = Engine(slots, token_seconds)
    server = await asyncio.start_server(engine.serve, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


# -- the clients --------------------------------------------------------------------------------
async def ttft(port: int, key: str, tokens: int) -> float:
    """One streamed chat on a fresh connection: seconds to its first generated token."""
    body = json.dumps({"model": "slotted", "stream": True, "max_tokens": tokens,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                      f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
        started = time.perf_counter()
        first: float | None = None
        seen = b""
        while b"[DONE]" not in seen:
            data = await reader.read(65536)
            if not data:
                raise RuntimeError(f"stream broke: {seen[-300:]!r}")
            seen += data
            if first is None and b'"content":"w' in seen:
                first = time.perf_counter() - started
        assert first is not None
        return first
    finally:
        writer.close()


async def phase(port: int, keys: dict[str, str], args: argparse.Namespace, noisy_streams: int
                ) -> tuple[list[float], int]:
    """The noisy key's backlog (``noisy_streams`` at all times; 0: the quiet key alone) and the
    quiet key's requests: the quiet TTFTs, and the noisy generations finished."""
    end = time.monotonic() + args.seconds
    finished = 0

    async def noisy() -> None:
        nonlocal finished
        while time.monotonic() < end:
            await ttft(port, keys["noisy"], args.long_tokens)
            finished += 1

    tasks = [asyncio.create_task(noisy()) for _ in range(noisy_streams)]
    if tasks:
        await asyncio.sleep(1.0)  # the backlog forms
    quiet: list[float] = []
    while time.monotonic() < end:
        quiet.append(await ttft(port, keys["quiet"], SHORT_TOKENS))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return quiet, finished


async def requests_per_second(url: str, key: str, clients: int, seconds: float) -> float:
    body = {"model": "fast", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {key}"}
    done = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        end = time.monotonic() + seconds

        async def loop() -> None:
            nonlocal done
            while time.monotonic() < end:
                response = await client.post("/v1/chat/completions", json=body,
                                             headers=headers)
                response.raise_for_status()
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(clients)))
        return done / (time.perf_counter() - started)


class Placed:
    """A metered caller, as the router sees it."""

    replica: str | None = None
    flow = "key-1"
    flow_name = "bench"
    flow_weight: float | None = None
    group = ""
    group_weight: float | None = None
    priority: Priority = "interactive"

    def may_use(self, model: str) -> bool:
        return True


async def router_calls_per_second(queued: bool, calls: int) -> float:
    router = Router(routing="least_busy", queueing=Queueing(enabled=queued),
                    capacity=100_000 if queued else 0)
    engine = EchoEngine(ModelSpec(name="m", kind="echo"))
    await engine.start()
    router.add(Replica(id="r", model="m", engine=engine))
    request = ChatCompletionRequest.model_validate(
        {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]})
    placed = Placed()
    started = time.perf_counter()
    for _ in range(calls):
        await router.chat(request, placed)
    return calls / (time.perf_counter() - started)


# -- the run ------------------------------------------------------------------------------------
def new_key(url: str, name: str) -> str:
    created = httpx.post(url + "/admin/v1/keys", json={"name": name}, timeout=30,
                         headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    created.raise_for_status()
    key: str = created.json()["key"]
    deadline = time.monotonic() + 30
    while httpx.get(url + "/v1/models", headers={"Authorization": f"Bearer {key}"},
                    timeout=30).status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"key {name} not accepted")
        time.sleep(0.2)
    return key


def idle(upstream: str) -> None:
    """Wait until the engine has nothing running or waiting (between phases)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with urllib.request.urlopen(upstream + "/state", timeout=10) as response:
            state = json.loads(response.read())
        if not state["running"] and not state["waiting"]:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the engine stayed busy: {state}")


def config(workdir: Path, upstream: str, mode: str, slots: int) -> Path:
    """The gateway of ``mode``: ``fifo`` (no queueing), ``fair`` (capacity: the slots),
    ``reserve`` (capacity: the slots less one, and a reserve of one)."""
    path = workdir / f"gateway-{mode}.yaml"
    options: dict[str, Any] = {"capacity": slots, "metrics": "none"}
    if mode == "reserve":
        options.update(capacity=slots - 1, reserve=1)
    path.write_text(yaml.safe_dump({
        "bundled_models": False, "fair_queue": mode != "fifo", "queue_timeout": 600,
        "queue_max": 100_000,
        "remote_models": [
            {"name": "slotted", "replicas": [
                {"kind": "http", "url": upstream + "/slotted/v1", "upstream_model": "fake",
                 "timeout": 600, "options": options}]},
            {"name": "fast", "replicas": [
                {"kind": "http", "url": upstream + "/fast/v1", "upstream_model": "fake",
                 "options": {"capacity": 100_000, "metrics": "none"}}]}]}))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--slots", type=int, default=4)  # at least 2 (the reserve's run)
    parser.add_argument("--noisy", type=int, default=32)
    parser.add_argument("--long-tokens", type=int, default=50)
    parser.add_argument("--token-ms", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--overhead-seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--router-calls", type=int, default=20_000)
    args = parser.parse_args()

    port = harness.free_port()
    upstream = f"http://127.0.0.1:{port}"
    engine = subprocess.Popen([sys.executable, __file__, "upstream", str(port),
                               str(args.slots), str(args.token_ms / 1000)])
    env = {"INFERD_ADMIN_KEY": ADMIN_KEY, "INFERD_KEY_REFRESH_SECONDS": "0.3"}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            with harness.InferdServer(work / "fifo", "--no-bundled", "--config",
                                      str(config(work, upstream, "fifo", args.slots)),
                                      env=env) as fifo, \
                 harness.InferdServer(work / "fair", "--no-bundled", "--config",
                                      str(config(work, upstream, "fair", args.slots)),
                                      env=env) as fair, \
                 harness.InferdServer(work / "reserve", "--no-bundled", "--config",
                                      str(config(work, upstream, "reserve", args.slots)),
                                      env=env) as reserve:
                gateways = {"fifo": fifo.url, "fair": fair.url, "reserve": reserve.url}
                keys = {mode: {name: new_key(url, name) for name in ("noisy", "quiet")}
                        for mode, url in gateways.items()}
                results: dict[str, tuple[list[float], int]] = {}
                idle(upstream)
                results["alone"] = asyncio.run(phase(int(fair.url.rsplit(":", 1)[1]),
                                                     keys["fair"], args, 0))
                for mode, url in gateways.items():
                    idle(upstream)
                    results[mode] = asyncio.run(phase(int(url.rsplit(":", 1)[1]),
                                                      keys[mode], args, args.noisy))
                idle(upstream)
                rps: dict[str, list[float]] = {"fifo": [], "fair": []}
                for _ in range(args.rounds):
                    for mode in rps:
                        url = gateways[mode]
                        rps[mode].append(asyncio.run(requests_per_second(
                            url, keys[mode]["quiet"], args.clients, args.overhead_seconds)))
    finally:
        engine.terminate()
        engine.wait(10)

    print(f"engine: {args.slots} slots, a token every {args.token_ms:g} ms; noisy key: "
          f"{args.noisy} streams of {args.long_tokens} tokens at all times; quiet key: one "
          f"request of {SHORT_TOKENS} tokens at a time; {args.seconds:g} s per gateway")
    p95 = {mode: harness.pct(quiet, 95) for mode, (quiet, _) in results.items()}
    print(f"{'gateway':<8} {'quiet n':>8} {'TTFT p50':>10} {'TTFT p95':>10} "
          f"{'p95 / alone':>12} {'noisy done':>11}")
    for mode, (quiet, finished) in results.items():
        print(f"{mode:<8} {len(quiet):>8} {harness.median(quiet) * 1000:>8.0f}ms "
              f"{p95[mode] * 1000:>8.0f}ms {p95[mode] / p95['alone']:>11.2f}x {finished:>11}")
    print(f"quiet key's p95 TTFT, FIFO / fair: {p95['fifo'] / p95['fair']:.1f}x, "
          f"FIFO / fair with a reserve: {p95['fifo'] / p95['reserve']:.1f}x")
    best = {mode: max(values) for mode, values in rps.items()}
    print(f"overhead, queue never full ({args.clients} clients, best of {args.rounds} x "
          f"{args.overhead_seconds:g} s): fair {best['fair']:.0f} req/s, off "
          f"{best['fifo']:.0f} req/s, fair / off {best['fair'] / best['fifo']:.3f}")
    calls = {"fair": 0.0, "off": 0.0}
    for _ in range(args.rounds):
        for mode in calls:
            calls[mode] = max(calls[mode], asyncio.run(
                router_calls_per_second(mode == "fair", args.router_calls)))
    print(f"overhead in process (Router.chat on an echo replica, best of {args.rounds} x "
          f"{args.router_calls}): fair {calls['fair']:.0f} calls/s, off {calls['off']:.0f} "
          f"calls/s, fair / off {calls['fair'] / calls['off']:.3f} "
          f"({(1 / calls['fair'] - 1 / calls['off']) * 1e6:.1f} us a call)")
    print(f"load average: {harness.load_average()}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "upstream":
        asyncio.run(run_upstream(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
    else:
        main()
