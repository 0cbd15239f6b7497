"""What the Responses API costs over chat completions, measured side by side in one run on
``inferd serve`` with the echo engine (answers at once, so the figures measure inferd):

- chat: ``POST /v1/chat/completions`` (the baseline);
- responses store=false: translation only; store=true: plus one row written per response;
- responses background: accepted/s (response row + job committed before the answer) and
  completed/s (until every one is ``completed``).

    .venv/bin/python bench/responses.py [--requests 1000] [--clients 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.jobs import start

ECHO = json.dumps([{"name": "echo", "kind": "echo"}])
TEXT = "the quick brown fox jumps over the lazy dog"


async def rate(url: str, path: str, body: dict[str, Any], requests: int,
               clients: int) -> tuple[float, list[str]]:
    ids: list[str] = []
    async with httpx.AsyncClient(base_url=url, timeout=600,
                                 limits=httpx.Limits(max_connections=clients)) as http:
        todo = iter(range(requests))

        async def client() -> None:
            for _ in todo:
                response = await http.post(path, json=body)
                response.raise_for_status()
                ids.append(response.json()["id"])

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return requests / (time.perf_counter() - started), ids


async def completed(url: str, ids: list[str], since: float) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        pending = set(ids)
        while pending:
            for response_id in list(pending)[:200]:
                status = (await http.get(f"/v1/responses/{response_id}")).json()["status"]
                if status not in ("queued", "in_progress"):
                    pending.discard(response_id)
            await asyncio.sleep(0.05)
    return len(ids) / (time.perf_counter() - since)


async def main(requests: int, clients: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start(Path(tmp), ["--no-bundled"], {"INFERD_MODELS": ECHO,
                                                        "INFERD_AUTH": "off"})
        try:
            chat = {"model": "echo", "messages": [{"role": "user", "content": TEXT}]}
            response = {"model": "echo", "input": TEXT}
            await rate(url, "/v1/chat/completions", chat, 50, clients)  # warm up
            figures = {
                "chat completions": (await rate(url, "/v1/chat/completions", chat, requests,
                                                clients))[0],
                "responses store=false": (await rate(url, "/v1/responses",
                                                     {**response, "store": False}, requests,
                                                     clients))[0],
                "responses store=true": (await rate(url, "/v1/responses", response, requests,
                                                    clients))[0],
            }
            since = time.perf_counter()
            accepted, ids = await rate(url, "/v1/responses", {**response, "background": True},
                                       requests, clients)
            figures["responses background accepted"] = accepted
            figures["responses background completed"] = await completed(url, ids, since)
        finally:
            proc.terminate()
            proc.wait(30)
    base = figures["chat completions"]
    print(f"{requests} requests, {clients} clients, echo engine, SQLite")
    for name, value in figures.items():
        print(f"{name:34s} {value:8.1f} req/s  ({value / base:5.2f}x chat)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=16)
    options = parser.parse_args()
    asyncio.run(main(options.requests, options.clients))
