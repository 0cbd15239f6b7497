"""The ``http`` replica kind: any OpenAI-compatible server (vLLM, SGLang, TGI, Ollama,
llama.cpp's server, another inferd).

Requests are forwarded as the client sent them, with the model name rewritten to the upstream's
and the upstream's credential sent as a Bearer token. Answers come back with the public model
name. Streams pass through chunk by chunk as they arrive; the upstream is asked for
``stream_options.include_usage`` so that its final usage chunk is seen. A query string in the
replica URL (``?api-version=...``, ``?token=...``) is sent with every request. A request made
while a trace is recorded carries its W3C ``traceparent`` (``inferd.tracing``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import orjson
from pydantic import ValidationError

from inferd.engines.base import Chunk, ModelInfo, Progress
from inferd.engines.remote import (
    RemoteEngine,
    RemoteSpec,
    UpstreamUnavailable,
    error_text,
    transport_error,
    transport_errors,
)
from inferd.engines.upstream import UpstreamClosed, UpstreamPool
from inferd.errors import UpstreamError
from inferd.jsontypes import JsonObject
from inferd.schemas.answers import (
    Answer,
    ChatCompletion,
    EmbeddingList,
    ImagesAnswer,
    RerankAnswer,
    ScoreList,
    TextCompletion,
    usage_of,
)
from inferd.schemas.images import ImageGenerationRequest
from inferd.schemas.openai import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from inferd.schemas.passthrough import Forward, Forwarded
from inferd.schemas.rerank import RerankRequest, ScoreRequest
from inferd.tracing import outgoing

A = TypeVar("A", bound=Answer)
# What an answer of each kind is called in the error a malformed one gets.
_KINDS: dict[type[Answer], str] = {
    ChatCompletion: "a chat completion", TextCompletion: "a text completion",
    EmbeddingList: "embeddings", ImagesAnswer: "images", RerankAnswer: "a rerank answer",
    ScoreList: "scores"}


def api_base(url: str) -> str:
    """``http://host:port`` -> ``http://host:port/v1``; a URL with a path is kept as it is
    (its query string is left out: see ``HttpEngine.url``)."""
    url = urlsplit(url)._replace(query="", fragment="").geturl().rstrip("/")
    return url if urlsplit(url).path not in ("", "/") else url + "/v1"


class HttpEngine(RemoteEngine):
    """Forwards OpenAI requests to an OpenAI-compatible server."""

    kind = "http"
    capabilities = frozenset({"chat", "completions", "embeddings"})

    def __init__(self, name: str, spec: RemoteSpec) -> None:
        super().__init__(name, spec)
        self.base = api_base(spec.url)
        query = urlsplit(spec.url).query
        self.query = f"?{query}" if query else ""
        self.root = self.base[: -len("/v1")] if self.base.endswith("/v1") else self.base
        self.health_url = str(spec.options.get("health_url") or "")
        self._pool: UpstreamPool | None = None  # non-streamed calls; streams use aiohttp
        # What the upstream serves, as /v1/models shows it (e.g. ["images"] for an image server)
        if spec.options.get("capabilities"):
            self.capabilities = frozenset(str(c) for c in spec.options["capabilities"])

    def url(self, path: str) -> str:
        """The upstream URL of an API path (``/chat/completions``), with the replica URL's
        query string."""
        return self.base + path + self.query

    def info(self) -> ModelInfo:
        return ModelInfo(name=self.name, kind=self.kind, capabilities=self.capabilities,
                         owned_by="inferd")

    async def probe(self) -> None:
        """``GET /health`` of the server, else ``GET /v1/models`` (not every server has both)."""
        if self.health_url:
            await self.get_ok(self.health_url)
            return
        try:
            await self.get_ok(self.root + "/health" + self.query)
        except UpstreamUnavailable as exc:
            if "answered" not in str(exc):
                raise  # not reachable at all: no point asking another path
            await self.get_ok(self.url("/models"))

    async def upstream_models(self) -> list[str]:
        """The ids of the upstream's ``GET /v1/models``."""
        body = await self.get_json(self.url("/models"))
        rows = body.get("data") if isinstance(body, dict) else None
        return [str(m["id"]) for m in rows or [] if isinstance(m, dict) and "id" in m]

    def _body(self, request: ChatCompletionRequest | CompletionRequest | EmbeddingRequest
              | ImageGenerationRequest, stream: bool = False) -> JsonObject:
        body = request.model_dump(exclude_unset=True)
        body["model"] = self.upstream_model
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        elif "stream" in body:
            body["stream"] = False
            body.pop("stream_options", None)
        return body

    async def start(self) -> None:
        await super().start()
        self._pool = UpstreamPool(self.base, self._headers,
                                  max_connections=self.spec.max_connections,
                                  connect_timeout=self.spec.connect_timeout,
                                  timeout=self.spec.timeout,
                                  resolve=self.spec.allow.resolve if self.spec.allow else None)

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        await super().close()

    async def _post_json(self, path: str, body: JsonObject) -> bytes:
        """A non-streamed call through the lean pool, errors mapped as ``post`` maps them:
        the raw answer."""
        if self._pool is None:
            raise UpstreamUnavailable(f"The replica of '{self.name}' is not started.")
        try:
            status, raw = await self._pool.post(path + self.query, orjson.dumps(body),
                                                outgoing())
            if status < 300:
                return raw
        except transport_errors() as exc:
            failed = ("broke off its answer" if isinstance(exc, UpstreamClosed)
                      and exc.mid_answer else "could not be reached")
            raise transport_error(exc, self.what, failed) from exc
        raise self.status_error(status, error_text(raw, status))

    async def _answer(self, path: str, body: JsonObject, kind: type[A]) -> A:
        """The upstream's answer to ``path``, validated as ``kind`` straight from its bytes
        (what it adds is kept)."""
        raw = await self._post_json(path, body)
        try:
            return kind.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            if first["type"] == "json_invalid":
                raise UpstreamUnavailable(f"{self.what} answered with invalid JSON.") from None
            where = ".".join(str(p) for p in first["loc"]) or "the body"
            raise UpstreamUnavailable(
                f"The replica of '{self.name}' answered something other than "
                f"{_KINDS.get(kind, kind.__name__)} (at {where}).") from None

    async def _stream(self, path: str, body: JsonObject, model: str) -> AsyncIterator[Chunk]:
        response = await self.post(self.url(path), body, outgoing())
        async for payload in self.sse_events(response, require_done=True):
            try:
                chunk = orjson.loads(payload)
            except orjson.JSONDecodeError as exc:
                raise UpstreamError(
                    f"The replica of '{self.name}' sent an invalid stream event.") from exc
            if "error" in chunk:
                error = chunk["error"]
                message = error.get("message") if isinstance(error, dict) else error
                raise UpstreamError(f"The replica of '{self.name}' failed: {message}")
            chunk["model"] = model
            if "usage" in chunk and chunk["usage"] is None:
                del chunk["usage"]
            yield chunk

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletion:
        result = await self._answer("/chat/completions", self._body(request), ChatCompletion)
        result.model = request.model
        return result

    def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[Chunk]:
        return self._stream("/chat/completions", self._body(request, stream=True), request.model)

    async def complete(self, request: CompletionRequest) -> TextCompletion:
        result = await self._answer("/completions", self._body(request), TextCompletion)
        result.model = request.model
        return result

    def complete_stream(self, request: CompletionRequest) -> AsyncIterator[Chunk]:
        return self._stream("/completions", self._body(request, stream=True), request.model)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingList:
        result = await self._answer("/embeddings", self._body(request), EmbeddingList)
        result.model = request.model
        return result

    async def rerank(self, request: RerankRequest) -> RerankAnswer:
        """Passed through when the upstream serves ``/rerank`` (capability ``rerank``), else
        answered from its embeddings."""
        if "rerank" not in self.capabilities:
            return await super().rerank(request)
        body = {**request.model_dump(exclude_unset=True), "model": self.upstream_model}
        result = await self._answer("/rerank", body, RerankAnswer)
        result.model = request.model
        return result

    async def score(self, request: ScoreRequest) -> ScoreList:
        if "score" not in self.capabilities:
            return await super().score(request)
        body = {**request.model_dump(exclude_unset=True), "model": self.upstream_model}
        result = await self._answer("/score", body, ScoreList)
        result.model = request.model
        return result

    async def forward(self, request: Forward) -> Forwarded:
        """POST the body or form on with the upstream's model name; the answer comes back
        as it is (a JSON answer naming a model names the public one)."""
        if request.capability not in self.capabilities:
            return await super().forward(request)
        data: Any
        headers = outgoing()
        if request.form is not None:
            form = aiohttp.FormData()
            for field in request.form:
                if field.filename is not None:  # a file
                    form.add_field(field.name, field.value, filename=field.filename,
                                   content_type=field.content_type)
                else:  # a plain field (bytes would be sent as a file)
                    form.add_field(field.name, self.upstream_model if field.name == "model"
                                   else field.value.decode())
            data = form()
            # the session's JSON content type would hide the multipart boundary
            headers["Content-Type"] = data.content_type
        else:
            data = orjson.dumps({**(request.json_body or {}), "model": self.upstream_model})
            headers["Content-Type"] = "application/json"
        try:
            response = await self.session.post(self.url(request.path), data=data,
                                               headers=headers, allow_redirects=False)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise transport_error(exc, f"The replica of '{self.name}'") from exc
        async with response:
            if response.status >= 300:
                await self.raise_for_status(response)
            body = await response.read()
            content_type = response.headers.get("Content-Type", "application/octet-stream")
        usage = None
        if content_type.startswith("application/json"):
            answer = orjson.loads(body)
            if isinstance(answer, dict):
                usage = usage_of(answer.get("usage"))
                if "model" in answer:
                    answer["model"] = request.model
                    body = orjson.dumps(answer)
        return Forwarded(body=body, content_type=content_type, usage=usage)

    async def images(self, request: ImageGenerationRequest,
                     progress: Progress | None = None) -> ImagesAnswer:
        """``/images/generations`` passed through (no step progress crosses HTTP)."""
        return await self._answer("/images/generations", self._body(request), ImagesAnswer)
