"""The model-host API ("LLM-Host"): the old ``/old/*`` endpoints, on the router.

``/old/initialize`` chooses the caller's "current" model, loading a GGUF first when the name is
not served yet (from ``path``, or ``<data_dir>/models/<name>.gguf``; loading is for admins);
``/old/generate`` and ``/old/stream`` chat with it (``stream`` sends the tokens as plain text as
they come); ``/old/status`` says what is loaded. The current model is the calling key's own:
one key's choice never changes another's, and a key may only choose a chat model its allow-list
names. It is kept in the store with its generation parameters, so every gateway shares it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypedDict

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response, StreamingResponse

from inferd.auth.principal import Principal
from inferd.engines import build_engine
from inferd.engines.residency import Resident
from inferd.errors import InvalidRequest, ModelNotFound, PermissionDenied
from inferd.http.compat import default_chat_model, serves_chat
from inferd.http.deps import PrincipalDep, ServicesDep, unless_disconnected
from inferd.http.jobs import AnyObject
from inferd.http.operation import INFER, TEXT, endpoint
from inferd.http.responses import json_response
from inferd.jsontypes import JsonObject
from inferd.routing.replica import Replica
from inferd.schemas import compat
from inferd.schemas.openai import MAX_TOKENS, ChatCompletionRequest
from inferd.services import Services
from inferd.settings import ModelSpec

router = APIRouter(tags=["model-host"])

STATE_KEY = "model-host.current"
GENERATION_PARAMS = ("temperature", "top_p", "max_tokens", "seed", "stop", "top_k", "min_p",
                     "repeat_penalty")


class Initialize(BaseModel):
    """``POST /old/initialize``: which model, and the parameters to generate with."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())
    model: str | None = Field(default=None, min_length=1)
    model_name: str | None = Field(default=None, min_length=1)
    path: str | None = None
    n_ctx: int | None = Field(default=None, ge=64)
    max_new_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    params: AnyObject = Field(default_factory=dict)


class OldChat(BaseModel):
    """``POST /old/generate`` and ``/old/stream``: messages (and optional parameters)."""

    model_config = ConfigDict(extra="allow")
    messages: list[AnyObject] = Field(min_length=1)


def _state_key(principal: Principal) -> str:
    """Where the caller's current model is kept: one entry per key (one for everyone when
    keys are off)."""
    return STATE_KEY if principal.key_id is None else f"{STATE_KEY}:{principal.key_id}"


class HostState(TypedDict, total=False):
    """A key's current model and the parameters to generate with (stored as JSON)."""

    model: str
    params: JsonObject
    initialized_at: float


async def _state(services: Services, principal: Principal) -> HostState:
    raw = await services.control.kv.get(_state_key(principal))
    state: HostState = orjson.loads(raw) if raw else {}
    return state


async def _load(services: Services, principal: Principal, name: str,
                spec: Initialize) -> None:
    """Load a GGUF under ``name`` and add it to the router."""
    if not principal.is_admin:
        raise PermissionDenied("Loading a model needs an admin key.")
    path = spec.path or str(services.settings.storage.data_dir / "models" / f"{name}.gguf")
    if not await asyncio.to_thread(Path(path).is_file):
        raise ModelNotFound(name)
    try:
        model = ModelSpec(name=name, path=path, n_ctx=spec.n_ctx or 2048,
                          n_threads=services.settings.engines.threads)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="path") from None
    engine = build_engine(model, services.residency)
    await engine.start()
    services.stack.push_async_callback(engine.close)
    settings = services.settings.router
    services.router.add(Replica(id=f"local:{name}", model=name, engine=engine,
                                cooldown_base=settings.replica_cooldown_base,
                                cooldown_max=settings.replica_cooldown_max))


# the current model is the calling key's own
@endpoint(router, "POST", "/old/initialize", access="key", answer=compat.HostInitialized,
          body=Initialize, errors=(403, 404, 413, 503))
async def initialize(request: Request, services: ServicesDep,
                     principal: PrincipalDep) -> Response:
    spec = Initialize.model_validate_json(await request.body())
    name = spec.model or spec.model_name or default_chat_model(services.inference, principal)
    try:
        name = services.router.resolve(name)
    except ModelNotFound:
        if not principal.may_use(name):
            raise  # neither served nor a name this key could use once loaded
        await _load(services, principal, name, spec)
    services.inference.check_model(principal, name)
    if not serves_chat(services.router, name):
        raise InvalidRequest(f"The model '{name}' cannot chat, so it cannot be the current "
                             "model.", param="model", code="model_not_supported")
    # An on-demand model configured here loads now, as the admin load route does.
    for engine in services.router.engines():
        if isinstance(engine, Resident) and engine.name == name:
            await engine.load()
    params = {k: v for k, v in {**(spec.model_extra or {}), **spec.params}.items()
              if k in GENERATION_PARAMS}
    if spec.max_new_tokens is not None:
        params["max_tokens"] = spec.max_new_tokens
    # the parameters must make a valid request now, not fail every later /old/generate
    ChatCompletionRequest.model_validate(
        {**params, "model": name, "messages": [{"role": "user", "content": ""}]})
    state: HostState = {"model": name, "params": params, "initialized_at": time.time()}
    await services.control.kv.set(_state_key(principal), orjson.dumps(state).decode())
    return json_response({"status": "initialized", "model": name, "params": params})


async def _request(services: Services, principal: Principal, body: OldChat,
                   stream: bool) -> ChatCompletionRequest:
    state = await _state(services, principal)
    model = state.get("model") or default_chat_model(services.inference, principal)
    extra = {k: v for k, v in (body.model_extra or {}).items() if k in GENERATION_PARAMS}
    return ChatCompletionRequest.model_validate(
        {**state.get("params", {}), **extra, "model": model, "messages": body.messages,
         "stream": stream})


@endpoint(router, "POST", "/old/generate", access="key", answer=compat.HostGenerated, body=OldChat,
          errors=(*INFER, 413))
async def generate(request: Request, services: ServicesDep,
                   principal: PrincipalDep) -> Response:
    chat = await _request(services, principal, OldChat.model_validate_json(await request.body()),
                          False)
    result = await unless_disconnected(request, services.inference.chat(chat, principal))
    usage = None if result.usage is None else result.usage.wire()
    return json_response({"response": result.choices[0].message.content if result.choices
                          else None, "model": chat.model, "usage": usage})


@endpoint(router, "POST", "/old/stream", access="key", body=OldChat, media=(TEXT,),
          errors=(*INFER, 413))
async def stream(request: Request, services: ServicesDep, principal: PrincipalDep) -> Response:
    chat = await _request(services, principal, OldChat.model_validate_json(await request.body()),
                          True)
    chunks = await services.inference.chat_stream(chat, principal)

    async def tokens() -> AsyncIterator[bytes]:
        async for chunk in chunks:
            for choice in chunk.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    yield piece.encode()

    return StreamingResponse(tokens(), media_type="text/plain; charset=utf-8")


@endpoint(router, "GET", "/old/status", access="key", answer=compat.HostStatus, errors=(503,))
async def status(services: ServicesDep, principal: PrincipalDep) -> Response:
    """The caller's current model, and the models its key may choose."""
    state = await _state(services, principal)
    models = {m.name: m for m in services.inference.visible_models(principal)}
    current = state.get("model")
    loaded = current in models
    return json_response({
        "status": "loaded" if loaded else "not_initialized", "model": current if loaded else None,
        "params": state.get("params", {}) if loaded else {},
        "default_model": next((n for n, m in models.items() if "chat" in m.capabilities), None),
        "models": sorted(models), "initialized_at": state.get("initialized_at")})


