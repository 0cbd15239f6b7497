"""A stand-in for Triton Inference Server with its vLLM backend (real Triton needs a GPU).

It follows Triton's documented generate extension: ``POST /v2/models/{name}/generate`` and
``/generate_stream`` take ``{"text_input", "parameters", <input tensors>...}``; the vLLM
backend's inputs ``stream``, ``exclude_input_in_output``, ``sampling_parameters`` (JSON text,
taking precedence over ``parameters``) and ``return_finish_reason`` /
``return_num_input_tokens`` / ``return_num_output_tokens`` are honoured. The "model" echoes
the prompt's last line of text word by word, up to ``max_tokens``, or gives the ``reply`` it
was made with (split at spaces, so its line breaks are kept). Errors are
``{"error": "..."}``: with an HTTP error status before inference, as an SSE event during a
stream. ``GET /v2/health/ready``
answers 200. Every request body is kept in ``requests`` for the tests to inspect.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

KNOWN_INPUTS = {"text_input", "parameters", "stream", "exclude_input_in_output",
                "sampling_parameters", "return_finish_reason", "return_num_input_tokens",
                "return_num_output_tokens"}


class FakeTriton:
    """An aiohttp server on loopback; ``async with FakeTriton(model) as url: ...``."""

    def __init__(self, model: str = "vllm_model", fail_after: int | None = None,
                 reply: str | None = None) -> None:
        self.model = model
        self.fail_after = fail_after  # break a stream with an error event after N pieces
        self.reply = reply
        self.requests: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> str:
        app = web.Application()
        app.router.add_get("/v2/health/ready", self.ready)
        app.router.add_post("/v2/models/{name}/generate", self.generate)
        app.router.add_post("/v2/models/{name}/generate_stream", self.generate_stream)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def __aexit__(self, *exc: object) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def ready(self, _request: web.Request) -> web.Response:
        return web.Response(status=200)

    def _parse(self, request_body: dict[str, Any], name: str) -> tuple[list[str], dict[str, Any]]:
        if name != self.model:
            raise _Error(400, f"Request for unknown model: '{name}' is not found")
        unknown = set(request_body) - KNOWN_INPUTS
        if unknown:
            raise _Error(400, f"unexpected inference input '{sorted(unknown)[0]}'")
        if "sampling_parameters" in request_body:
            params = json.loads(request_body["sampling_parameters"])
        else:
            params = dict(request_body.get("parameters", {}))
        for value in request_body.get("parameters", {}).values():
            if isinstance(value, list | dict):
                raise _Error(400, "parameters must be strings, numbers or booleans")
        prompt = str(request_body["text_input"])
        # the "model" echoes the last line of text (template markers aside)
        lines = [line.replace("<|im_end|>", "") for line in prompt.splitlines()
                 if line.strip() and not line.startswith("<|im_start|>")]
        words = lines[-1].split() if lines else []
        if self.reply is not None:
            words = self.reply.split(" ")
        stop = params.get("stop") or []
        stop = [stop] if isinstance(stop, str) else stop
        kept: list[str] = []
        for word in words:
            if word in stop:
                break
            kept.append(word)
        limit = params.get("max_tokens")
        reason = "stop"
        if limit is not None and len(kept) > int(limit):
            kept, reason = kept[: int(limit)], "length"
        return kept, {"reason": reason, "prompt_tokens": len(prompt.split()),
                      "prefix": "" if request_body.get("exclude_input_in_output") else prompt}

    def _extras(self, body: dict[str, Any], event: dict[str, Any], reason: str | None,
                prompt_tokens: int, new_tokens: int) -> dict[str, Any]:
        if body.get("return_finish_reason"):
            event["finish_reason"] = [str(reason)]
        if body.get("return_num_input_tokens"):
            event["num_input_tokens"] = prompt_tokens
        if body.get("return_num_output_tokens"):
            event["num_output_tokens"] = [new_tokens]
        return event

    async def generate(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        try:
            words, info = self._parse(body, request.match_info["name"])
        except _Error as exc:
            return web.json_response({"error": exc.message}, status=exc.status)
        event = {"model_name": self.model, "model_version": "1",
                 "text_output": info["prefix"] + " ".join(words)}
        return web.json_response(self._extras(body, event, info["reason"],
                                              info["prompt_tokens"], len(words)))

    async def generate_stream(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        try:
            words, info = self._parse(body, request.match_info["name"])
        except _Error as exc:
            return web.json_response({"error": exc.message}, status=exc.status)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await response.prepare(request)
        for index, word in enumerate(words):
            if self.fail_after is not None and index >= self.fail_after:
                await response.write(b'data: {"error": "engine died mid-generation"}\n\n')
                return response
            last = index == len(words) - 1
            event = {"model_name": self.model, "model_version": "1",
                     "text_output": word if index == 0 else " " + word}
            event = self._extras(body, event, info["reason"] if last else None,
                                 info["prompt_tokens"], 1)
            await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            await asyncio.sleep(0)
        await response.write_eof()
        return response


class _Error(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
