"""The inference service: what the HTTP layer and the job workers call to run a request.

It sits between the callers and the router and does the work every request shares, so that
HTTP routes and job workers take one path:

1. the key's model allow-list (403 ``model_not_allowed``);
2. the key's limits: one atomic check-and-reserve of requests/min and of an estimate of the
   tokens (429 with ``Retry-After``), settled with the real usage when the request is done;
3. the router, which picks a replica and runs the engine;
4. metering (``inferd.metering``): metrics, one usage record and one log line per request.

Nothing here reads or writes the database on the way of a request.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import ROUND_CEILING
from typing import Any, TypeVar

from inferd import inference_tracing as traced
from inferd.auth.limits import (
    NANOS,
    BudgetAlerts,
    Limiter,
    LocalLimiter,
    OnBudget,
    nanos,
    no_event,
    period_bounds,
)
from inferd.auth.principal import Principal
from inferd.engines.base import Chunk, ImageDefaults, ModelInfo, Progress
from inferd.engines.streams import primed
from inferd.errors import InferdError, ModelNotFound, PermissionDenied, RateLimited, envelope
from inferd.metering import CLIENT_CLOSED, Call, Metering
from inferd.metrics import UNKNOWN_MODEL
from inferd.routing.router import Router
from inferd.schemas.answers import (
    ChatCompletion,
    EmbeddingList,
    ImagesAnswer,
    RerankAnswer,
    Result,
    ScoreList,
    TextCompletion,
    Usage,
    metered_usage,
    usage_of,
)
from inferd.schemas.images import (
    DEFAULT_STEPS,
    ImageGenerationRequest,
    check_bounds,
    image_units,
    image_usage,
    parse_size,
)
from inferd.schemas.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    message_chars,
)
from inferd.schemas.passthrough import Forward, Forwarded
from inferd.schemas.rerank import RerankRequest, ScoreRequest
from inferd.settings import BrokerSettings, LimitSettings
from inferd.tracing import Tracer, current_tracer
from inferd.usage import in_job

T = TypeVar("T")
R = TypeVar("R", bound=Result)
Q = TypeVar("Q", RerankRequest, ScoreRequest)

# Completion tokens reserved when a request sets no max_tokens (settled with the real count).
DEFAULT_COMPLETION_ESTIMATE = 256


def estimate_chat_prompt(request: ChatCompletionRequest) -> int:
    return message_chars(request) // 4 + 4 * len(request.messages)


def estimate_chat(request: ChatCompletionRequest) -> int:
    """The prompt's tokens and each of the ``n`` choices' completion limit."""
    return estimate_chat_prompt(request) + (request.n or 1) * (request.token_limit()
                                                               or DEFAULT_COMPLETION_ESTIMATE)


def estimate_completion_prompt(request: CompletionRequest) -> int:
    return sum(len(p) for p in request.prompts()) // 4


def estimate_completion(request: CompletionRequest) -> int:
    return estimate_completion_prompt(request) + len(request.prompts()) * (request.n or 1) * (
        request.token_limit() or DEFAULT_COMPLETION_ESTIMATE)


def pieces(chunk: Chunk) -> int:
    """The generated pieces in a stream chunk: one per choice that carries text or a tool
    call (engines stream about one token per chunk)."""
    count = 0
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("tool_calls") or choice.get("text"):
            count += 1
    return count


def partial_usage(prompt_estimate: int, completion: int) -> Usage:
    """The usage of a stream that ended before the engine reported its own: the prompt as
    estimated, the pieces already sent as completion tokens (what was delivered is billed)."""
    return Usage.of(prompt_estimate, completion)


def estimate_embedding(request: EmbeddingRequest) -> int:
    return sum(len(text) for text in request.inputs()) // 4 + 1


class Inference:
    """Runs chat, completion and embedding requests through limits, the router and metering."""

    def __init__(self, router: Router, metering: Metering, *,
                 limiter: Limiter | None = None, tracer: Tracer | None = None) -> None:
        self.router = router
        self.metering = metering
        self.limiter: Limiter = limiter or LocalLimiter(BudgetAlerts(metering.metrics))
        self.tracer = tracer  # None: nothing traced (inferd.inference_tracing)
        # The budget period each user's and team's budget was seeded for (limit id, with
        # ``:money`` for the money budget -> start).
        self._seeded: dict[str, float] = {}

    async def close(self) -> None:
        await self.limiter.close()

    async def seed_budgets(self, principals: list[Principal]) -> None:
        """Start each budgeted key's period with the tokens it already used and the money it
        already spent (from the usage store), so that a restart does not hand out a fresh
        budget; likewise the budgets of their users and teams (all their keys' usage)."""
        now = time.time()
        budgeted = {p.key_id: p for p in principals
                    if p.token_budget is not None and p.key_id is not None}
        starts = {k: period_bounds(p.budget_period, now)[0] for k, p in budgeted.items()}
        for key_id, used in (await self.metering.store.tokens_since(starts)).items():
            await self.limiter.seed_budget(budgeted[key_id].limit_key, starts[key_id], used)
        imaging = {p.key_id: p for p in principals
                   if p.image_budget is not None and p.key_id is not None}
        starts = {k: period_bounds(p.budget_period, now)[0] for k, p in imaging.items()}
        for key_id, used in (await self.metering.store.image_units_since(starts)).items():
            await self.limiter.seed_image_budget(imaging[key_id].limit_key, starts[key_id],
                                                 used)
        spending = {p.key_id: p for p in principals
                    if p.max_budget is not None and p.key_id is not None}
        starts = {k: period_bounds(p.budget_period, now)[0] for k, p in spending.items()}
        for key_id, spent in (await self.metering.store.cost_since(starts)).items():
            await self.limiter.seed_money(spending[key_id].limit_key, starts[key_id],
                                          nanos(spent))
        for level in {lv.limit_id: lv for p in principals for lv in p.levels
                      if lv.token_budget is not None or lv.max_budget is not None}.values():
            start = period_bounds(level.budget_period, now)[0]
            # each budget apart: one set later in the period is seeded when it appears
            tokens, money = level.limit_id, f"{level.limit_id}:money"
            if level.token_budget is not None and self._seeded.get(tokens) != start:
                used = await self.metering.store.level_tokens_since(level.kind, level.row_id,
                                                                    start)
                await self.limiter.seed_budget(level.limit_id, start, used)
                self._seeded[tokens] = start
            if level.max_budget is not None and self._seeded.get(money) != start:
                spent = await self.metering.store.level_cost_since(level.kind, level.row_id,
                                                                   start)
                await self.limiter.seed_money(level.limit_id, start, nanos(spent))
                self._seeded[money] = start

    def _only_replica(self, model: str) -> str | None:
        """The replica of a model that has just one (when the router did not say which)."""
        try:
            replicas = self.router.entry(model).replicas
        except ModelNotFound:
            return None
        return replicas[0].id if len(replicas) == 1 else None

    # -- the shared path ----------------------------------------------------------------------
    def allowed_names(self, principal: Principal) -> set[str] | None:
        """Canonical names of the models the key may use (None: every model)."""
        if principal.allowed_models is None:
            return None
        names = set()
        for name in principal.allowed_models:
            try:
                names.add(self.router.resolve(name))
            except ModelNotFound:
                continue
        return names

    def visible_models(self, principal: Principal) -> list[ModelInfo]:
        """The served models the key may use: what every model list shows it."""
        allowed = self.allowed_names(principal)
        return [m for m in self.router.models() if allowed is None or m.name in allowed]

    def check_model(self, principal: Principal, model: str) -> None:
        """403 when the key may not use ``model`` (by the name asked for or its canonical one)."""
        if principal.may_use(model):
            return
        canonical = self.router.resolve(model)  # an unknown model stays a 404
        if not principal.may_use(canonical):
            raise PermissionDenied(f"This API key may not use the model '{model}'.",
                                   param="model", code="model_not_allowed")

    async def _begin(self, endpoint: str, model: str, principal: Principal, stream: bool,
                     estimate: Callable[[], int],
                     prompt: Callable[[], int] | None = None, body: Any = None,
                     worst: Callable[[str], int] | None = None) -> Call:
        """``estimate``: the tokens the request may use; ``prompt``: the part of them in its
        prompt (the rest is completion), for a money budget's worst case cost; ``body``: the
        request, kept by the request log for a key with ``log_bodies``; ``worst``: the worst
        case cost (nanos) of a request priced otherwise than by its tokens, given the model's
        canonical name."""
        # Metric labels name only models the router knows: any other name a client sends is
        # counted as UNKNOWN_MODEL, so that clients cannot grow /metrics without bound.
        call = Call(endpoint, model, principal, stream,
                    model if self.router.knows(model) else UNKNOWN_MODEL, batch=in_job())
        if principal.log_bodies:  # kept by the request log
            call.request_body = body
        if self.tracer is not None and (tracer := current_tracer()) is not None:
            call.span = traced.start_span(tracer, endpoint, model, stream)
        try:
            if principal.allowed_models is not None:
                self.check_model(principal, model)
            if principal.limited:
                tokens = estimate()
                cost = 0
                if principal.spends and worst is not None:
                    cost = worst(self._canonical(call.model))
                elif principal.spends:
                    cost = self._worst_cost(call.model, tokens,
                                            None if prompt is None else prompt())
                call.reservation = await self.limiter.acquire(principal, tokens, cost)
        except InferdError as exc:
            if isinstance(exc, RateLimited):
                self.metering.metrics.child("rate_limited", exc.code or "").inc()
            if not isinstance(exc, ModelNotFound):
                if principal.log_bodies:
                    call.response_body = envelope(exc)
                self._end(call, None, exc.status, exc.code)
            elif call.span is not None:
                traced.end_span(call.span, None, exc.status, exc.code, None)
            raise
        self.metering.metrics.child("in_flight", call.label).inc()
        return call

    def _worst_cost(self, model: str, tokens: int, prompt: int | None) -> int:
        """The most a request of ``tokens`` tokens (``prompt`` of them in the prompt) to
        ``model`` may cost, in nanos rounded up: at the highest price of the model and of
        its replicas."""
        completion = tokens if prompt is None else max(0, tokens - prompt)
        worst = self.metering.prices.worst_cost(self._canonical(model), prompt, completion)
        return int((worst * NANOS).to_integral_value(rounding=ROUND_CEILING))

    def _worst_images(self, model: str, images: int, steps: int) -> int:
        """The most ``images`` pictures of ``steps`` denoising steps of ``model`` (canonical)
        may cost, in nanos rounded up: at the highest price per image and per step of the model
        and of its replicas."""
        worst = self.metering.prices.worst_image_cost(model, images, steps)
        return int((worst * NANOS).to_integral_value(rounding=ROUND_CEILING))

    def _canonical(self, model: str) -> str:
        """The model's canonical name (the name asked for when the router does not know it)."""
        with contextlib.suppress(ModelNotFound):
            return self.router.resolve(model)
        return model

    def _failed(self, call: Call, exc: BaseException, usage: Usage | None = None) -> None:
        self.metering.metrics.child("in_flight", call.label).dec()
        if call.principal.log_bodies and isinstance(exc, InferdError):
            call.response_body = envelope(exc)
        if isinstance(exc, InferdError):
            self._end(call, usage, exc.status, exc.code)
        elif isinstance(exc, Exception):
            self._end(call, usage, 500, "internal_error")
        else:  # cancelled: the client went away
            self._end(call, usage, CLIENT_CLOSED, "client_closed")

    def _done(self, call: Call, usage: Usage | None) -> None:
        self.metering.metrics.child("in_flight", call.label).dec()
        self._end(call, usage, 200, None)

    def _end(self, call: Call, usage: Usage | None, status: int,
             error: str | None) -> None:
        if call.replica is None:
            call.assume_replica(self._only_replica(call.model))
        if call.reservation is not None:
            cost = None
            if call.reservation.cost or call.principal.spends:
                cost = nanos(self.metering.prices.cost(call.model, call.replica, usage,
                                                       call.images, call.steps))
            self.limiter.settle(call.reservation, 0 if usage is None else usage.tokens, cost)
        self.metering.finish(call, usage, status, error)
        if call.span is not None:
            traced.end_span(call.span, usage, status, error, call.replica)

    def _traced(self, call: Call, run: Awaitable[T]) -> Awaitable[T]:
        """``run``, with the call's span current when it has one."""
        if call.span is None or self.tracer is None:
            return run
        return traced.within(self.tracer, call.span, run)

    async def _metered(self, call: Call, stream: AsyncIterator[Chunk],
                       prompt_estimate: int) -> AsyncIterator[Chunk]:
        usage: object = None  # the usage chunk's, as sent
        sent = 0
        # The time to first token is taken when the first chunk that carries generated text
        # is handed to the response (not when the stream opens: engines send the role first),
        # and the time between two such chunks is the inter-token latency.
        last: float | None = None
        gap = self.metering.metrics.child("inter_token", call.label).observe
        clock = time.perf_counter
        notes = None if call.span is None else traced.StreamNotes()
        kept: list[Chunk] | None = None
        if call.principal.log_bodies:  # assembled by the request log
            kept = call.response_body = []
        try:
            async for chunk in stream:
                if kept is not None:
                    kept.append(chunk)
                if notes is not None:
                    notes.feed(chunk)
                if chunk.get("usage"):
                    usage = chunk["usage"]
                count = pieces(chunk)
                if count:
                    now = clock()
                    if last is None:
                        call.ttft = now
                    else:
                        gap(now - last)
                    last = now
                    sent += count
                yield chunk
        except BaseException as exc:  # broken off (upstream, client): bill what was sent
            if notes is not None:
                notes.note(call.span)
            self._failed(call, exc, usage_of(usage) or partial_usage(prompt_estimate, sent))
            raise
        else:
            if notes is not None:
                notes.note(call.span)
            self._done(call, usage_of(usage))
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _answer(self, call: Call, run: Awaitable[R]) -> R:
        """``run``'s answer, metered by its usage."""
        try:
            result = await self._traced(call, run)
        except BaseException as exc:
            self._failed(call, exc)
            raise
        if call.span is not None:
            traced.answered(call.span, result)
        if call.principal.log_bodies:
            call.response_body = result
        self._done(call, metered_usage(result))
        return result

    async def _started(self, call: Call, start: Awaitable[AsyncIterator[Chunk]],
                       prompt_estimate: int) -> AsyncIterator[Chunk]:
        try:
            stream = await self._traced(call, start)
        except BaseException as exc:
            self._failed(call, exc)
            raise
        # started, so that its accounting runs even if the response is never sent (the
        # client left first): asyncio closes a started generator when it is dropped
        return await primed(self._metered(call, stream, prompt_estimate))

    # -- the requests -------------------------------------------------------------------------
    async def chat(self, request: ChatCompletionRequest,
                   principal: Principal) -> ChatCompletion:
        call = await self._begin("chat", request.model, principal, False,
                                 lambda: estimate_chat(request),
                                 lambda: estimate_chat_prompt(request), body=request)
        return await self._answer(call, self.router.chat(request, call))

    async def chat_stream(self, request: ChatCompletionRequest,
                          principal: Principal) -> AsyncIterator[Chunk]:
        """A started stream: errors before the first chunk are raised here."""
        call = await self._begin("chat", request.model, principal, True,
                                 lambda: estimate_chat(request),
                                 lambda: estimate_chat_prompt(request), body=request)
        return await self._started(call, self.router.chat_stream(request, call),
                                   estimate_chat_prompt(request))

    async def complete(self, request: CompletionRequest,
                       principal: Principal) -> TextCompletion:
        call = await self._begin("completions", request.model, principal, False,
                                 lambda: estimate_completion(request),
                                 lambda: estimate_completion_prompt(request), body=request)
        return await self._answer(call, self.router.complete(request, call))

    async def complete_stream(self, request: CompletionRequest,
                              principal: Principal) -> AsyncIterator[Chunk]:
        call = await self._begin("completions", request.model, principal, True,
                                 lambda: estimate_completion(request),
                                 lambda: estimate_completion_prompt(request), body=request)
        return await self._started(call, self.router.complete_stream(request, call),
                                   estimate_completion_prompt(request))

    async def embed(self, request: EmbeddingRequest,
                    principal: Principal) -> EmbeddingList:
        call = await self._begin("embeddings", request.model, principal, False,
                                 lambda: estimate_embedding(request),
                                 lambda: estimate_embedding(request), body=request)
        return await self._answer(call, self.router.embed(request, call))

    async def rerank(self, request: RerankRequest,
                     principal: Principal) -> RerankAnswer:
        return await self._simple("rerank", request, principal, self.router.rerank)

    async def score(self, request: ScoreRequest,
                    principal: Principal) -> ScoreList:
        return await self._simple("score", request, principal, self.router.score)

    async def forward(self, request: Forward, principal: Principal) -> Forwarded:
        """Audio and moderations passed through to a replica: limited and metered like any
        request (by the answer's usage when it reports one)."""
        size = sum(len(f.value) for f in request.form or []) // 4 + 1
        call = await self._begin(request.path.strip("/").replace("/", "."), request.model,
                                 principal, False, lambda: size)
        try:
            result = await self._traced(call, self.router.forward(request, call))
        except BaseException as exc:
            self._failed(call, exc)
            raise
        self._done(call, result.usage)
        return result

    async def count_tokens(self, endpoint: str, model: str, principal: Principal,
                           estimate: int, count: Callable[[], Awaitable[int]]) -> int:
        """A prompt's tokens counted (``count``) under the key's limits like any request: it
        takes one request of the key's rpm and its ``estimate`` of tokens, and leaves a usage
        record of its prompt tokens (no completion tokens)."""
        call = await self._begin(endpoint, model, principal, False, lambda: estimate)
        try:
            tokens = await self._traced(call, count())
        except BaseException as exc:
            self._failed(call, exc)
            raise
        self._done(call, Usage.of(tokens, 0))
        return tokens

    async def _simple(self, endpoint: str, request: Q, principal: Principal,
                      run: Callable[[Q, Call], Awaitable[R]]) -> R:
        """A request answered in one piece, metered by its usage's tokens."""
        size = len(request.model_dump_json()) // 4 + 1
        call = await self._begin(endpoint, request.model, principal, False, lambda: size,
                                 body=request)
        return await self._answer(call, run(request, call))

    def image_cost(self, request: ImageGenerationRequest) -> tuple[int, int]:
        """The request's cost in image units, and the most denoising steps a picture of it
        may run (its ``steps``, else the highest default of the model's replicas), with the
        model's defaults for what it leaves out; 400 when it asks more than the model's
        ``max_steps`` or ``max_size``."""
        drawn: list[ImageDefaults] = []
        with contextlib.suppress(ModelNotFound):
            drawn = [r.engine.info().images or ImageDefaults()
                     for r in self.router.entry(request.model).replicas]
        first = drawn[0] if drawn else ImageDefaults()
        steps = request.steps or first.steps
        most_steps = request.steps or max((d.steps for d in drawn), default=DEFAULT_STEPS)
        width, height = request.dimensions() or parse_size(first.size)
        check_bounds(request.model, steps, width, height, first.max_steps, first.max_size)
        return image_units(request.n, steps, width, height), most_steps

    async def images(self, request: ImageGenerationRequest, principal: Principal,
                     progress: Progress | None = None) -> ImagesAnswer:
        """Generate images; metered as images, steps and image units (rpm, ipm, upm and the
        image budget apply, tokens do not). A money budget reserves the ``n`` pictures of the
        most steps they may run at the highest prices per image and per step of the model and
        its replicas, settled to the real cost (the steps really run; when the replica does not
        report them, the steps each picture was asked to run)."""
        # 400 past the model's max_steps or max_size
        units, steps = self.image_cost(request)
        call = await self._begin("images", request.model, principal, False, lambda: 0,
                                 worst=lambda model: self._worst_images(model, request.n, steps))
        try:
            if principal.ipm is not None:
                await self.limiter.acquire_images(principal, request.n)
            if principal.upm is not None or principal.image_budget is not None:
                await self.limiter.acquire_image_units(principal, units)
            call.image_units = units
            result = await self._traced(call, self.router.images(request, progress, call))
        except BaseException as exc:
            self._failed(call, exc)
            raise
        call.images, call.steps = image_usage(result)
        if not call.steps:  # a replica that does not count them ran the steps it was asked
            call.steps = call.images * steps
        self.metering.metrics.child("images", call.label, "images").inc(call.images)
        self.metering.metrics.child("images", call.label, "steps").inc(call.steps)
        self._done(call, None)
        return result


def build_limiter(settings: LimitSettings, broker: BrokerSettings,
                  on_budget: OnBudget = no_event) -> Limiter:
    """Per-key limits in this process, or in Redis (``broker``'s) when gateways share them;
    ``on_budget``: what a money budget's events are given to (``BudgetAlerts``)."""
    from inferd.auth.redis_limits import RedisLimiter

    if settings.limits_backend == "redis" or (settings.limits_backend == "auto"
                                              and broker.redis_url):
        return RedisLimiter(broker.redis_url or "redis://127.0.0.1:6379/0",
                            prefix=broker.redis_prefix, on_budget=on_budget)
    return LocalLimiter(on_budget)
