"""The inference service: what the HTTP layer and the job workers call to run a request.

It sits between the callers and the router and does the work every request shares, so that
HTTP routes and job workers take one path:

1. the key's model allow-list (403 ``model_not_allowed``);
2. the key's limits: one atomic check-and-reserve of requests/min and of an estimate of the
   tokens (429 with ``Retry-After``), settled with the real usage when the request is done;
3. metering: Prometheus metrics, one usage record (buffered, written in batches), and one
   structured log line.

Nothing here reads or writes the database on the way of a request.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from inferd.auth.admin import KeyAdmin
from inferd.auth.bootstrap import AuthPolicy, bootstrap
from inferd.auth.keys import KeyRing
from inferd.auth.limits import Limiter, LocalLimiter, Reservation, period_bounds
from inferd.auth.principal import ANONYMOUS, Principal
from inferd.engines.base import Chunk, Progress
from inferd.engines.streams import primed
from inferd.errors import InferdError, ModelNotFound, PermissionDenied, RateLimited
from inferd.logs import request_id_var
from inferd.metrics import Metrics, ReplicaState
from inferd.routing.router import Router
from inferd.schemas.images import ImageGenerationRequest, image_usage
from inferd.schemas.openai import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from inferd.schemas.rerank import RerankRequest, ScoreRequest
from inferd.settings import Settings
from inferd.store.db import Database
from inferd.store.keys import KeyStore
from inferd.store.repo import KeyValueStore
from inferd.store.usage import UsageStore
from inferd.usage import UsageRecorder, current_call

log = logging.getLogger("inferd.requests")

# Completion tokens reserved when a request sets no max_tokens (settled with the real count).
DEFAULT_COMPLETION_ESTIMATE = 256
CLIENT_CLOSED = 499


def estimate_chat(request: ChatCompletionRequest) -> int:
    chars = 0
    for message in request.messages:
        content = message.content
        if isinstance(content, str):
            chars += len(content)
        elif content is not None:
            chars += sum(len(getattr(part, "text", "")) for part in content)
    return chars // 4 + 4 * len(request.messages) + (request.token_limit()
                                                     or DEFAULT_COMPLETION_ESTIMATE)


def estimate_completion(request: CompletionRequest) -> int:
    prompts = request.prompts()
    return sum(len(p) for p in prompts) // 4 + len(prompts) * (request.token_limit()
                                                              or DEFAULT_COMPLETION_ESTIMATE)


def estimate_embedding(request: EmbeddingRequest) -> int:
    return sum(len(text) for text in request.inputs()) // 4 + 1


class Call:
    """One request on its way through: what metering needs at the end."""

    __slots__ = ("endpoint", "images", "model", "principal", "replica", "request_id",
                 "reservation", "started", "steps", "stream", "ttft")

    def __init__(self, endpoint: str, model: str, principal: Principal, stream: bool) -> None:
        self.endpoint = endpoint
        self.model = model
        self.principal = principal
        self.stream = stream
        self.started = time.perf_counter()
        self.ttft: float | None = None
        self.replica: str | None = None
        self.reservation: Reservation | None = None
        self.request_id = request_id_var.get()
        self.images: int | None = None  # image generation only: pictures and steps made
        self.steps: int | None = None


class Inference:
    """Runs chat, completion and embedding requests through limits, the router and metering."""

    def __init__(self, router: Router, *, limiter: Limiter | None = None,
                 usage: UsageRecorder | None = None, metrics: Metrics | None = None,
                 log_requests: bool = False) -> None:
        self.router = router
        self.limiter = limiter
        self.usage = usage
        self.metrics = metrics or Metrics()
        self.log_requests = log_requests
        self.keys: KeyRing | None = None
        self.key_admin: KeyAdmin | None = None
        self.usage_store: UsageStore | None = None
        self.policy = AuthPolicy("off", "127.0.0.1")
        self._closers: list[Callable[[], Any]] = []

    @classmethod
    async def start(cls, settings: Settings, db: Database, router: Router) -> Inference:
        """Build keys, limits and metering for a running inferd (``close`` undoes it)."""
        from inferd.auth.redis_limits import RedisLimiter

        limiter: Limiter = LocalLimiter()
        if settings.limits_backend == "redis" or (settings.limits_backend == "auto"
                                                  and settings.redis_url):
            limiter = RedisLimiter(settings.redis_url or "redis://127.0.0.1:6379/0")
        usage_store = UsageStore(db)
        usage = UsageRecorder(usage_store.insert_many, flush_seconds=settings.usage_flush_seconds)
        self = cls(router, limiter=limiter, usage=usage, log_requests=settings.log_requests)
        self.usage_store = usage_store
        key_store = KeyStore(db)
        generated = await bootstrap(settings, key_store, KeyValueStore(db))
        self.policy = AuthPolicy(settings.auth, settings.host)
        self.keys = KeyRing(key_store, refresh_seconds=settings.key_refresh_seconds,
                            on_load=self._seed_budgets)
        self.key_admin = KeyAdmin(key_store, self.keys)
        await self.keys.start()
        await usage.start()
        self._closers = [self.keys.close, usage.close, limiter.close]
        self.metrics.register_replicas(self._replica_states)
        self.metrics.register_gauge("inferd_usage_records_pending",
                                    "Usage records waiting to be written",
                                    lambda: float(usage.pending))
        if generated:
            print("inferd: generated the first admin API key (shown only this once):\n"
                  f"  {generated}", file=sys.stderr, flush=True)
        return self

    async def close(self) -> None:
        for close in self._closers:
            await close()
        self._closers = []

    @property
    def enforcing(self) -> bool:
        """Whether requests must carry a valid key right now (see ``inferd.auth.bootstrap``)."""
        return self.policy.enforcing(self.keys is not None and self.keys.has_admin)

    async def _seed_budgets(self, principals: list[Principal]) -> None:
        if self.usage_store is None or self.limiter is None:
            return
        now = time.time()
        budgeted = {p.key_id: p for p in principals
                    if p.token_budget is not None and p.key_id is not None}
        starts = {k: period_bounds(p.budget_period, now)[0] for k, p in budgeted.items()}
        for key_id, used in (await self.usage_store.tokens_since(starts)).items():
            await self.limiter.seed_budget(budgeted[key_id].limit_key, starts[key_id], used)

    def _replica_states(self) -> list[ReplicaState]:
        replicas = getattr(self.router, "replicas", None)
        if replicas is None:
            return []
        return [ReplicaState(id=r.id, model=r.model, healthy=bool(getattr(r, "healthy", True)),
                             in_flight=r.in_flight, failures=getattr(r, "failures", 0),
                             cooldown_until=getattr(r, "cooldown_until", None))
                for r in replicas()]

    def _only_replica(self, model: str) -> str | None:
        """The replica of a model that has just one (when the router did not say which)."""
        try:
            replicas = self.router.entry(self.router.resolve(model)).replicas
        except (InferdError, KeyError, AttributeError):
            return None
        return replicas[0].id if len(replicas) == 1 else None

    # -- the shared path ----------------------------------------------------------------------
    def check_model(self, principal: Principal, model: str) -> None:
        """403 when the key may not use ``model`` (by the name asked for or its canonical one)."""
        if principal.may_use(model):
            return
        canonical = self.router.resolve(model)  # an unknown model stays a 404
        if not principal.may_use(canonical):
            raise PermissionDenied(f"This API key may not use the model '{model}'.",
                                   param="model", code="model_not_allowed")

    async def _begin(self, endpoint: str, model: str, principal: Principal, stream: bool,
                     estimate: Callable[[], int]) -> Call:
        call = Call(endpoint, model, principal, stream)
        current_call.set(call)
        try:
            if principal.allowed_models is not None:
                self.check_model(principal, model)
            if principal.limited and self.limiter is not None:
                call.reservation = await self.limiter.acquire(principal, estimate())
        except InferdError as exc:
            if isinstance(exc, RateLimited):
                self.metrics.child("rate_limited", exc.code or "").inc()
            if not isinstance(exc, ModelNotFound):
                self._end(call, None, exc.status, exc.code)
            raise
        self.metrics.child("in_flight", model).inc()
        return call

    def _failed(self, call: Call, exc: BaseException, usage: dict[str, Any] | None = None) -> None:
        self.metrics.child("in_flight", call.model).dec()
        if isinstance(exc, InferdError):
            self._end(call, usage, exc.status, exc.code)
        elif isinstance(exc, Exception):
            self._end(call, usage, 500, "internal_error")
        else:  # cancelled: the client went away
            self._end(call, usage, CLIENT_CLOSED, "client_closed")

    def _done(self, call: Call, usage: dict[str, Any] | None) -> None:
        self.metrics.child("in_flight", call.model).dec()
        self._end(call, usage, 200, None)

    def _end(self, call: Call, usage: dict[str, Any] | None, status: int,
             error: str | None) -> None:
        latency = time.perf_counter() - call.started
        prompt = completion = 0
        if usage:
            prompt = usage.get("prompt_tokens") or 0
            completion = usage.get("completion_tokens") or 0
        if call.reservation is not None and self.limiter is not None:
            self.limiter.settle(call.reservation, prompt + completion)
        model, metrics = call.model, self.metrics
        metrics.child("requests", model, call.endpoint, str(status)).inc()
        metrics.child("latency", model, call.endpoint).observe(latency)
        ttft = None
        if call.ttft is not None:
            ttft = call.ttft - call.started
            metrics.child("ttft", model).observe(ttft)
        if prompt:
            metrics.child("tokens", model, "prompt").inc(prompt)
        if completion:
            metrics.child("tokens", model, "completion").inc(completion)
        key_id = call.principal.key_id
        if self.usage is not None:
            replica = call.replica or self._only_replica(model)
            self.usage.record((time.time(), call.request_id, key_id, model, replica,
                               call.endpoint, call.stream, status, error, prompt, completion,
                               prompt + completion, latency * 1000.0,
                               None if ttft is None else ttft * 1000.0, call.images,
                               call.steps))
        if self.log_requests or status >= 500:
            log.log(logging.WARNING if status >= 500 else logging.INFO,
                    "%s %s %d", call.endpoint, model, status, extra={
                        "key_id": key_id, "model": model, "endpoint": call.endpoint,
                        "status": status, "error": error, "prompt_tokens": prompt,
                        "completion_tokens": completion, "stream": call.stream,
                        "latency_ms": round(latency * 1000.0, 3)})

    async def _metered(self, call: Call, stream: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
        usage: dict[str, Any] | None = None
        try:
            async for chunk in stream:
                if chunk.get("usage"):
                    usage = chunk["usage"]
                yield chunk
        except BaseException as exc:
            self._failed(call, exc, usage)
            raise
        else:
            self._done(call, usage)
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    # -- the requests -------------------------------------------------------------------------
    async def chat(self, request: ChatCompletionRequest,
                   principal: Principal = ANONYMOUS) -> dict[str, Any]:
        call = await self._begin("chat", request.model, principal, False,
                                 lambda: estimate_chat(request))
        try:
            result = await self.router.chat(request)
        except BaseException as exc:
            self._failed(call, exc)
            raise
        self._done(call, result.get("usage"))
        return result

    async def chat_stream(self, request: ChatCompletionRequest,
                          principal: Principal = ANONYMOUS) -> AsyncIterator[Chunk]:
        """A started stream: errors before the first chunk are raised here."""
        call = await self._begin("chat", request.model, principal, True,
                                 lambda: estimate_chat(request))
        try:
            stream = await self.router.chat_stream(request)
        except BaseException as exc:
            self._failed(call, exc)
            raise
        call.ttft = time.perf_counter()
        # started, so that its accounting runs even if the response is never sent (the
        # client left first): asyncio closes a started generator when it is dropped
        return await primed(self._metered(call, stream))

    async def complete(self, request: CompletionRequest,
                       principal: Principal = ANONYMOUS) -> dict[str, Any]:
        call = await self._begin("completions", request.model, principal, False,
                                 lambda: estimate_completion(request))
        try:
            result = await self.router.complete(request)
        except BaseException as exc:
            self._failed(call, exc)
            raise
        self._done(call, result.get("usage"))
        return result

    async def complete_stream(self, request: CompletionRequest,
                              principal: Principal = ANONYMOUS) -> AsyncIterator[Chunk]:
        call = await self._begin("completions", request.model, principal, True,
                                 lambda: estimate_completion(request))
        try:
            stream = await self.router.complete_stream(request)
        except BaseException as exc:
            self._failed(call, exc)
            raise
        call.ttft = time.perf_counter()
        # started, so that its accounting runs even if the response is never sent (the
        # client left first): asyncio closes a started generator when it is dropped
        return await primed(self._metered(call, stream))

    async def embed(self, request: EmbeddingRequest,
                    principal: Principal = ANONYMOUS) -> dict[str, Any]:
        call = await self._begin("embeddings", request.model, principal, False,
                                 lambda: estimate_embedding(request))
        try:
            result = await self.router.embed(request)
        except BaseException as exc:
            self._failed(call, exc)
            raise
        self._done(call, result.get("usage"))
        return result

    async def rerank(self, request: RerankRequest,
                     principal: Principal = ANONYMOUS) -> dict[str, Any]:
        return await self._simple("rerank", request, principal, self.router.rerank)

    async def score(self, request: ScoreRequest,
                    principal: Principal = ANONYMOUS) -> dict[str, Any]:
        return await self._simple("score", request, principal, self.router.score)

    async def _simple(self, endpoint: str, request: Any, principal: Principal,
                      run: Callable[[Any], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        """A request answered in one piece, metered by its usage's tokens."""
        size = len(request.model_dump_json()) // 4 + 1
        call = await self._begin(endpoint, request.model, principal, False, lambda: size)
        try:
            result = await run(request)
        except BaseException as exc:
            self._failed(call, exc)
            raise
        self._done(call, result.get("usage"))
        return result

    async def images(self, request: ImageGenerationRequest, principal: Principal = ANONYMOUS,
                     progress: Progress | None = None) -> dict[str, Any]:
        """Generate images; metered as images and steps (rpm and ipm apply, tokens do not)."""
        call = await self._begin("images", request.model, principal, False, lambda: 0)
        try:
            if principal.ipm is not None and self.limiter is not None:
                await self.limiter.acquire_images(principal, request.n)
            result = await self.router.images(request, progress)
        except BaseException as exc:
            self._failed(call, exc)
            raise
        call.images, call.steps = image_usage(result)
        self.metrics.child("images", call.model, "images").inc(call.images)
        self.metrics.child("images", call.model, "steps").inc(call.steps)
        self._done(call, None)
        return result
