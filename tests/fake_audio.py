"""A stand-in for an OpenAI-compatible audio and moderation server (no speech model runs here).

It follows OpenAI's documented protocol: ``POST /v1/audio/transcriptions`` takes a multipart
form (``file``, ``model``, optional ``response_format``…) and answers ``{"text"}``;
``POST /v1/audio/speech`` takes ``{"model", "input", "voice", "response_format"}`` and answers
the audio bytes (here a WAV header and silence, as ``audio/wav``); ``POST /v1/moderations``
takes ``{"input", "model"}`` and answers ``{"id", "model", "results": [...]}``.
``GET /v1/models`` serves the health probe. Every request is kept in ``requests``.
"""

from __future__ import annotations

import struct
from typing import Any

from aiohttp import web


def silent_wav(samples: int = 800) -> bytes:
    data = b"\0\0" * samples
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)
            + b"data" + struct.pack("<I", len(data)) + data)


class FakeAudio:
    """An aiohttp server on loopback; ``async with FakeAudio() as url: ...``."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None

    async def __aenter__(self) -> str:
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/audio/transcriptions", self.transcribe)
        app.router.add_post("/v1/audio/speech", self.speech)
        app.router.add_post("/v1/moderations", self.moderate)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def __aexit__(self, *exc: object) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def models(self, _request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "whisper-x"}]})

    async def transcribe(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("file")
        if not isinstance(upload, web.FileField):
            return web.json_response({"error": {"message": "file is required"}}, status=400)
        audio = upload.file.read()
        self.requests.append({"path": request.path, "model": form.get("model"),
                              "filename": upload.filename, "bytes": len(audio)})
        return web.json_response({"text": f"heard {len(audio)} bytes",
                                  "usage": {"type": "duration", "seconds": 1}})

    async def speech(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append({"path": request.path, **body})
        return web.Response(body=silent_wav(), content_type="audio/wav")

    async def moderate(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append({"path": request.path, **body})
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        return web.json_response({"id": "modr-1", "model": body["model"], "results": [
            {"flagged": "kill" in str(text), "categories": {"violence": "kill" in str(text)},
             "category_scores": {"violence": 0.9 if "kill" in str(text) else 0.01}}
            for text in inputs]})
