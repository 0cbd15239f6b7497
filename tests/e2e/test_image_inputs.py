"""Image inputs (``image_url`` content parts): passed through to ``http`` replicas unchanged,
refused with a 400 naming the part by the text-only bundled model; inferd fetches no URL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from aiohttp import web

from tests.helpers import InferdProcess

# A 1x1 PNG as a data URL, and an http URL nothing listens on (inferd must not fetch it).
PIXEL = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8"
         "z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
MESSAGES = [{"role": "user", "content": [
    {"type": "text", "text": "What is in these pictures?"},
    {"type": "image_url", "image_url": {"url": PIXEL, "detail": "low"}},
    {"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/cat.png"}}]}]


class RecordingUpstream:
    """An OpenAI-compatible chat server on loopback that keeps every request body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None

    async def __aenter__(self) -> str:
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.chat)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def __aexit__(self, *exc: object) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def models(self, _request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "vision"}]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        pictures = sum(1 for m in body["messages"] if isinstance(m["content"], list)
                       for p in m["content"] if p["type"] == "image_url")
        text = f"I see {pictures} pictures."
        usage = {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}
        base = {"id": "chatcmpl-up", "created": 1, "model": body["model"]}
        if not body.get("stream"):
            return web.json_response({**base, "object": "chat.completion", "usage": usage,
                                      "choices": [{"index": 0, "finish_reason": "stop",
                                                   "message": {"role": "assistant",
                                                               "content": text}}]})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": text},
                                "finish_reason": None}]},
                  {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                  {"choices": [], "usage": usage}]
        for chunk in chunks:
            payload = {**base, "object": "chat.completion.chunk", **chunk}
            await response.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        return response


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[RecordingUpstream, InferdProcess]]:
    upstream = RecordingUpstream()
    async with upstream as url:
        config = tmp_path / "gw.yaml"
        config.write_text(yaml.safe_dump({"bundled_models": False, "remote_models": [
            {"name": "vision", "replicas": [{"kind": "http", "url": url,
                                             "upstream_model": "vision-upstream"}]}]}))
        gw = InferdProcess(tmp_path / "gw", "--config", str(config), "--no-bundled",
                           env={"INFERD_AUTH": "off"})
        await asyncio.to_thread(gw.start)
        try:
            yield upstream, gw
        finally:
            await asyncio.to_thread(gw.stop)


async def test_image_parts_reach_an_http_replica_unchanged(
        gateway: tuple[RecordingUpstream, InferdProcess]) -> None:
    upstream, gw = gateway
    api = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    answer = await api.chat.completions.create(model="vision", messages=MESSAGES)  # type: ignore[arg-type]
    assert answer.choices[0].message.content == "I see 2 pictures."
    stream = await api.chat.completions.create(model="vision", messages=MESSAGES,  # type: ignore[arg-type]
                                               stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "I see 2 pictures."
    assert len(upstream.bodies) == 2
    for body in upstream.bodies:
        assert body["messages"] == MESSAGES  # data URL, detail and http URL as they were sent
        assert body["model"] == "vision-upstream"


async def test_a_malformed_image_part_is_a_400_before_any_replica(
        gateway: tuple[RecordingUpstream, InferdProcess]) -> None:
    upstream, gw = gateway
    async with httpx.AsyncClient(base_url=gw.url, timeout=60) as http:
        for part in ({"type": "image_url", "image_url": {"url": "ftp://host/cat.png"}},
                     {"type": "image_url", "image_url": "http://host/cat.png"},
                     {"type": "image_url"}):
            response = await http.post("/v1/chat/completions", json={
                "model": "vision", "messages": [{"role": "user", "content": [
                    {"type": "text", "text": "hi"}, part]}]})
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert error["param"] == "messages[0].content[1]", error
            assert error["type"] == "invalid_request_error"
    assert upstream.bodies == []
