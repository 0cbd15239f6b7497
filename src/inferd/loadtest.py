"""``inferd bench``: drive an inferd (or any OpenAI-compatible server) and report what it did.

The job of the image backend's ``make stresstest`` (``hey`` against the backend, to watch the
autoscaler add pods), with what ``hey`` cannot see: tokens per second, time to the first token of a
stream, and the errors by status. A run is bounded by ``--requests`` or ``--duration`` (whichever
ends first), with ``--concurrency`` requests in flight; each request is drawn from ``--mix``
(weights of ``chat``, ``stream``, ``embeddings``, ``images``, ``health``).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TypedDict

import aiohttp

from inferd.jsontypes import JsonObject

KINDS = ("chat", "stream", "embeddings", "images", "health")
WORDS = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray",
)


@dataclass
class Plan:
    """What to send and for how long."""

    url: str
    model: str
    embedding_model: str = ""
    image_model: str = ""
    api_key: str = ""
    concurrency: int = 8
    requests: int | None = None
    duration: float | None = None
    mix: dict[str, float] = field(default_factory=lambda: {"chat": 1.0})
    prompt_words: tuple[int, int] = (8, 32)
    max_tokens: int = 32
    timeout: float = 300.0
    seed: int = 0


@dataclass
class Sample:
    kind: str
    status: int  # 0: no answer (connection error, timeout)
    seconds: float
    ttft: float | None = None
    completion_tokens: int = 0
    prompt_tokens: int = 0
    error: str = ""


def parse_mix(text: str) -> dict[str, float]:
    """``chat=3,stream=1`` (a bare name weighs 1) into weights; unknown kinds refused."""
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition("=")
        if name not in KINDS:
            raise ValueError(f"unknown kind '{name}' in the mix (kinds: {', '.join(KINDS)})")
        try:
            value = float(weight) if weight else 1.0
        except ValueError as exc:
            raise ValueError(f"the weight of '{name}' is not a number: {weight!r}") from exc
        if value < 0:
            raise ValueError(f"the weight of '{name}' is negative")
        mix[name] = value
    if not mix or sum(mix.values()) <= 0:
        raise ValueError("the mix needs at least one kind with a positive weight")
    return mix


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by nearest rank; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


class Runner:
    """Sends the plan's requests and keeps a sample of each."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.samples: list[Sample] = []
        self.random = random.Random(plan.seed)
        self.started = 0.0
        self.issued = 0
        self._kinds = list(plan.mix)
        self._weights = [plan.mix[k] for k in self._kinds]

    def _prompt(self) -> str:
        low, high = self.plan.prompt_words
        return " ".join(self.random.choice(WORDS) for _ in range(self.random.randint(low, high)))

    def _more(self) -> bool:
        plan = self.plan
        if plan.requests is not None and self.issued >= plan.requests:
            return False
        return plan.duration is None or time.monotonic() - self.started < plan.duration

    async def run(self, progress: Any = None) -> list[Sample]:
        headers = {"Authorization": f"Bearer {self.plan.api_key}"} if self.plan.api_key else {}
        timeout = aiohttp.ClientTimeout(total=self.plan.timeout)
        connector = aiohttp.TCPConnector(limit=self.plan.concurrency)
        self.started = time.monotonic()
        async with aiohttp.ClientSession(self.plan.url.rstrip("/"), headers=headers,
                                         timeout=timeout, connector=connector) as session:
            reporter = asyncio.create_task(self._report(progress)) if progress else None
            await asyncio.gather(*(self._client(session)
                                   for _ in range(self.plan.concurrency)))
            if reporter is not None:
                reporter.cancel()
        return self.samples

    async def _report(self, progress: Any) -> None:
        while True:
            await asyncio.sleep(1.0)
            progress(self.samples, time.monotonic() - self.started)

    async def _client(self, session: aiohttp.ClientSession) -> None:
        while self._more():
            self.issued += 1
            kind = self.random.choices(self._kinds, self._weights)[0]
            self.samples.append(await self._one(session, kind))

    async def _one(self, session: aiohttp.ClientSession, kind: str) -> Sample:
        start = time.monotonic()
        try:
            if kind == "health":
                async with session.get("/health") as response:
                    await response.read()
                    return Sample(kind, response.status, time.monotonic() - start)
            if kind == "stream":
                return await self._stream(session, start)
            path, body = self._request(kind)
            async with session.post(path, json=body) as response:
                data = await response.read()
                sample = Sample(kind, response.status, time.monotonic() - start)
                if response.status == 200:
                    usage = (json.loads(data) or {}).get("usage") or {}
                    sample.completion_tokens = int(usage.get("completion_tokens") or 0)
                    sample.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                else:
                    sample.error = _error_code(data)
                return sample
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            return Sample(kind, 0, time.monotonic() - start, error=type(exc).__name__)

    def _request(self, kind: str) -> tuple[str, JsonObject]:
        plan = self.plan
        if kind == "embeddings":
            return "/v1/embeddings", {"model": plan.embedding_model or plan.model,
                                      "input": self._prompt()}
        if kind == "images":
            return "/v1/images/generations", {"model": plan.image_model or plan.model,
                                              "prompt": self._prompt(), "n": 1,
                                              "size": "256x256"}
        return "/v1/chat/completions", {
            "model": plan.model, "max_tokens": plan.max_tokens,
            "messages": [{"role": "user", "content": self._prompt()}]}

    async def _stream(self, session: aiohttp.ClientSession, start: float) -> Sample:
        _, body = self._request("chat")
        body.update(stream=True, stream_options={"include_usage": True})
        async with session.post("/v1/chat/completions", json=body) as response:
            sample = Sample("stream", response.status, 0.0)
            if response.status != 200:
                sample.error = _error_code(await response.read())
                sample.seconds = time.monotonic() - start
                return sample
            async for raw in response.content:
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if sample.ttft is None and any((c.get("delta") or {}).get("content")
                                               for c in chunk.get("choices") or []):
                    sample.ttft = time.monotonic() - start
                usage = chunk.get("usage")
                if usage:
                    sample.completion_tokens = int(usage.get("completion_tokens") or 0)
                    sample.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            sample.seconds = time.monotonic() - start
            return sample


def _error_code(data: bytes) -> str:
    try:
        error = json.loads(data).get("error") or {}
        return str(error.get("code") or error.get("type") or "")
    except (ValueError, AttributeError):
        return ""


class Report(TypedDict):
    """What a run measured (``summary``)."""

    requests: int
    succeeded: int
    failed: int
    seconds: float
    requests_per_second: float
    completion_tokens: int
    tokens_per_second: float
    by_kind: dict[str, int]
    latency: dict[str, float | None]
    ttft: dict[str, float | None]
    errors: dict[str, int]


def summary(samples: list[Sample], elapsed: float) -> Report:
    """Requests/s, tokens/s, latency and TTFT percentiles (seconds), errors by status."""
    ok = [s for s in samples if 200 <= s.status < 300]
    latencies = [s.seconds for s in ok]
    ttfts = [s.ttft for s in ok if s.ttft is not None]
    tokens = sum(s.completion_tokens for s in ok)
    errors = Counter(f"{s.status} {s.error}".strip() if s.status else f"no answer {s.error}"
                     for s in samples if not 200 <= s.status < 300)
    elapsed = max(elapsed, 1e-9)
    return {
        "requests": len(samples), "succeeded": len(ok), "failed": len(samples) - len(ok),
        "seconds": round(elapsed, 3),
        "requests_per_second": round(len(ok) / elapsed, 2),
        "completion_tokens": tokens,
        "tokens_per_second": round(tokens / elapsed, 2),
        "by_kind": dict(Counter(s.kind for s in samples)),
        "latency": {f"p{q}": _round(percentile(latencies, q)) for q in (50, 90, 95, 99)},
        "ttft": {f"p{q}": _round(percentile(ttfts, q)) for q in (50, 90, 95, 99)},
        "errors": dict(errors),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def render(report: Report) -> str:
    """The summary as text for a terminal."""
    def row(name: str, values: dict[str, float | None]) -> str:
        shown = "  ".join(f"{k} {'-' if v is None else f'{v * 1000:.1f} ms'}"
                          for k, v in values.items())
        return f"{name:<10} {shown}"

    lines = [f"requests   {report['requests']} ({report['succeeded']} ok, "
             f"{report['failed']} failed) in {report['seconds']:.1f} s",
             f"rate       {report['requests_per_second']:.2f} requests/s, "
             f"{report['tokens_per_second']:.2f} completion tokens/s",
             row("latency", report["latency"]), row("ttft", report["ttft"])]
    if report["errors"]:
        lines.append("errors     " + ", ".join(f"{k}: {v}" for k, v in
                                                 sorted(report["errors"].items())))
    return "\n".join(lines)
