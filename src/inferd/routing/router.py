"""The router: a public model name (or alias) to the replicas that serve it.

``Router.pick`` chooses among a model's healthy replicas by the model's ``routing``:
``least_busy``: the fewest requests relative to its weight (ties rotate): the running and
waiting requests its engine reports (``Replica.busy``, read by the catalogue's load poller)
plus those sent since the read, or this gateway's requests in flight when it has no fresh read;
``weighted``: in turn, in proportion to the weights (smooth weighted round-robin);
``prefix``: the replica the request's routing key ranks first (rendezvous hashing, the same in
every gateway), unless it is loaded past its bound, then the next (``inferd.routing.affinity``);
a request without a key (embeddings, images...) goes to the least busy.

A request that fails on a replica before its first byte (connection
refused or reset, timeout, 5xx or 429: ``UpstreamUnavailable``) is tried on another replica,
then on the model's fallbacks; the failing replica cools down (see ``Replica``). Once a stream
has delivered its first chunk nothing is retried: a break ends it with an error event.
A caller that meters the request passes it as ``placed``: the router writes there the replica
that served it (the last one tried), and skips the fallbacks its key may not use (a fallback
never widens a key's model allow-list).

When the model's replicas all run as many requests as their capacity, a request first waits
its turn in the gateway's queue for the model (``inferd.routing.fairqueue``: fair between keys,
interactive before batch); admitted, it goes to a replica with room. Its fallbacks, tried
only when the model fails, do not queue.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, get_args

from inferd.engines.base import Chunk, Engine, ModelInfo, Progress
from inferd.engines.remote import UpstreamUnavailable
from inferd.engines.streams import primed
from inferd.errors import ModelNotFound, Unavailable, UpstreamError
from inferd.metrics import Metrics
from inferd.routing import affinity
from inferd.routing.fairqueue import Admission, FairQueue, Priority, Queueing
from inferd.routing.replica import Replica
from inferd.routing.tracing import RouteTrace
from inferd.schemas.answers import (
    ChatCompletion,
    EmbeddingList,
    ImagesAnswer,
    RerankAnswer,
    ScoreList,
    TextCompletion,
)
from inferd.schemas.images import ImageGenerationRequest
from inferd.schemas.openai import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from inferd.schemas.passthrough import Forward, Forwarded
from inferd.schemas.rerank import RerankRequest, ScoreRequest
from inferd.settings import RouterSettings, Routing
from inferd.tracing import Tracer, current_tracer

__all__ = ["ROUTINGS", "ModelEntry", "Placed", "Replica", "Router"]

ROUTINGS: tuple[str, ...] = get_args(Routing)
# A model's routing when it sets none, and the load bound of ``prefix``: the settings'.
DEFAULT_ROUTING: Routing = RouterSettings.model_fields["routing"].default
SPILL: float = RouterSettings.model_fields["routing_spill"].default
SLACK: int = RouterSettings.model_fields["routing_slack"].default

T = TypeVar("T")
R = TypeVar("R", ChatCompletionRequest, CompletionRequest, EmbeddingRequest,
            ImageGenerationRequest, RerankRequest, ScoreRequest, Forward)


class Placed(Protocol):
    """A request being metered, as the router sees it: it is told which replica serves it and
    says which models its key may use."""

    replica: str | None
    # whose request it is, for fair queueing: the key's id, name and weight, its team (its
    # id, "" for none) and the team's weight, and its priority class
    flow: str
    flow_name: str
    flow_weight: float | None
    group: str
    group_weight: float | None
    priority: Priority

    def may_use(self, model: str) -> bool: ...


@dataclass
class ModelEntry:
    """A public model: its aliases, the models to fall back to, and its replicas."""

    name: str
    aliases: list[str] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)
    replicas: list[Replica] = field(default_factory=list)
    routing: Routing | None = None  # None: the router's default
    # ``weighted``: each replica's running credit (smooth weighted round-robin)
    credit: dict[str, float] = field(default_factory=dict)


class Router:
    """Maps model names to replicas and sends requests to one of them."""

    def __init__(self, max_attempts: int = 3, routing: Routing = DEFAULT_ROUTING,
                 spill: float = SPILL, slack: int = SLACK, *,
                 queueing: Queueing | None = None, capacity: int = 0,
                 metrics: Metrics | None = None, tracer: Tracer | None = None) -> None:
        self._models: dict[str, ModelEntry] = {}
        self._aliases: dict[str, str] = {}
        self._turn = 0
        self.max_attempts = max_attempts
        self.routing: Routing = routing
        self.spill = spill
        self.slack = slack
        # the capacity of a replica that sets none (0: no bound), and the queues of the models
        # at capacity
        self.capacity = capacity
        self.queue = FairQueue(queueing or Queueing(), self.room, metrics, spare=self.spare)
        self.tracer = tracer  # None: nothing traced (inferd.routing.tracing)

    # -- the catalogue --------------------------------------------------------------------
    def add(self, replica: Replica, aliases: list[str] | None = None) -> None:
        entry = self._models.get(replica.model) or self.set_model(replica.model)
        entry.replicas.append(replica)
        for alias in aliases or []:
            if alias not in entry.aliases:
                entry.aliases.append(alias)
            self._aliases[alias] = replica.model
        self.queue.track(replica.model)
        self.queue.wake(replica.model)  # room for what waits

    # -- capacity ----------------------------------------------------------------------------
    def limit(self, replica: Replica) -> float | None:
        """The requests ``replica`` takes at once (None: no bound): its own capacity, the one
        learned from its engine (``"auto"``: None until learned), else the router's."""
        if replica.learn_capacity:
            return replica.learned_capacity
        if replica.capacity is not None:
            return float(replica.capacity)
        return float(self.capacity) if self.capacity > 0 else None

    def _serving(self, entry: ModelEntry, now: float) -> list[Replica]:
        """The replicas a request of ``entry`` goes to now (a standby only without others)."""
        ready = [r for r in entry.replicas if r.available(now)]
        return [r for r in ready if not r.standby] or ready

    def room(self, name: str) -> float | None:
        """How many more requests the replicas of model ``name`` take now within their
        capacity; None when there is no bound (a replica has none, or no replica is
        available: the request goes on, for ``pick`` to answer)."""
        return self._free(name, False)

    def spare(self, name: str) -> float | None:
        """How many more requests the replicas of model ``name`` take now within their
        capacity and reserve (for a team or key with nothing running); None as ``room``."""
        return self._free(name, True)

    def _free(self, name: str, reserve: bool) -> float | None:
        entry = self._models.get(name)
        if entry is None:
            return None
        now = time.time()
        ready = self._serving(entry, now)
        if not ready:
            return None
        free = 0.0
        for r in ready:
            limit = self.limit(r)
            if limit is None:
                return None
            free += max(0.0, limit + (r.reserve if reserve else 0) - r.load(now))
        return free

    def _full(self, name: str) -> set[str]:
        """The replicas of ``name`` at capacity (a request admitted goes to another); when
        all are, those at capacity and reserve too (one let into a reserve goes to another)."""
        now = time.time()
        full, spent = set(), set()
        replicas = self._models[name].replicas
        for r in replicas:
            limit = self.limit(r)
            if limit is not None and r.load(now) >= limit:
                full.add(r.id)
                if r.load(now) >= limit + r.reserve:
                    spent.add(r.id)
        return spent if len(full) == len(replicas) else full

    def wake(self, model: str | None = None) -> None:
        """A replica may have room now (a load read, a probe): admit what waits for it."""
        self.queue.wake(model)

    def set_model(self, name: str, aliases: list[str] | None = None,
                  fallbacks: list[str] | None = None, routing: str | None = "") -> ModelEntry:
        """Create or update a model (its replicas are kept); ``routing`` "" keeps it, None
        sets the router's default."""
        entry = self._models.setdefault(name, ModelEntry(name))
        if aliases is not None:
            for alias in entry.aliases:
                self._aliases.pop(alias, None)
            entry.aliases = list(aliases)
            for alias in aliases:
                self._aliases[alias] = name
        if fallbacks is not None:
            entry.fallbacks = list(fallbacks)
        if routing != "":
            entry.routing = routing if routing in ROUTINGS else None  # type: ignore[assignment]
        return entry

    def routing_of(self, name: str) -> Routing:
        """How the replicas of ``name`` are chosen."""
        return self._models[self.resolve(name)].routing or self.routing

    def set_routing(self, name: str) -> Routing | None:
        """The routing ``name`` sets for itself here (None: the router's default); raises
        ``KeyError`` for a model this router does not hold."""
        return self._models[name].routing

    def remove_model(self, name: str) -> list[Replica]:
        """Forget a model; returns its replicas so that the caller can close their engines."""
        entry = self._models.pop(name, None)
        if entry is None:
            return []
        self.queue.forget(name)
        for alias in entry.aliases:
            self._aliases.pop(alias, None)
        return entry.replicas

    def remove_replica(self, replica_id: str) -> Replica | None:
        for entry in self._models.values():
            for replica in entry.replicas:
                if replica.id == replica_id:
                    entry.replicas.remove(replica)
                    return replica
        return None

    def entry(self, name: str) -> ModelEntry:
        return self._models[self.resolve(name)]

    def entries(self) -> list[ModelEntry]:
        return list(self._models.values())

    def replicas(self) -> list[Replica]:
        return [r for entry in self._models.values() for r in entry.replicas]

    def replica(self, replica_id: str) -> Replica | None:
        return next((r for r in self.replicas() if r.id == replica_id), None)

    def knows(self, name: str) -> bool:
        """Whether ``name`` is a model or an alias of one (without raising)."""
        return self._aliases.get(name, name) in self._models

    def resolve(self, name: str) -> str:
        """The canonical model name for ``name``; raises ``ModelNotFound``."""
        canonical = self._aliases.get(name, name)
        if canonical not in self._models:
            raise ModelNotFound(name)
        return canonical

    def pick(self, name: str, exclude: set[str] | frozenset[str] = frozenset(),
             key: int | None = None) -> Replica:
        """A replica for ``name`` by the model's routing (see the module docstring); ``key``
        is the request's routing key digest (``affinity.digest``), if it has one.

        When every replica is cooling down, one whose cooldown is over is tried (half-open)
        before the model is declared unavailable.
        """
        entry = self._models[self.resolve(name)]
        replicas = entry.replicas
        now = time.time()
        ready = [r for r in replicas if r.id not in exclude and r.available(now)]
        if not ready:
            ready = [r for r in replicas if r.id not in exclude and r.engine.ready()
                     and now >= r.cooldown_until]
        if not ready:
            raise Unavailable(f"No replica of model '{name}' is available.")
        # a standby (a request held until a worker starts) only when nothing else can answer
        ready = [r for r in ready if not r.standby] or ready
        if len(ready) == 1:
            return ready[0]
        routing = entry.routing or self.routing
        if routing == "prefix" and key is not None:
            return affinity.bounded(key, ready, self.spill, self.slack, lambda r: r.busy(now))
        if routing == "weighted":
            return _round_robin(entry, ready)
        self._turn += 1
        offset = self._turn % len(ready)
        rotated = ready[offset:] + ready[:offset]
        return min(rotated, key=lambda r: (r.busy(now) + 1) / r.weight)

    def models(self) -> list[ModelInfo]:
        out = []
        for entry in self._models.values():
            if entry.replicas:
                info = entry.replicas[0].engine.info()
                info.name = entry.name
                out.append(info)
        # A model with no replica (a past run's local model, or one whose replicas are all
        # removed) cannot answer, so it is not offered; the admin API still lists it.
        return out

    def model_names(self) -> list[str]:
        return list(self._models)

    def engines(self) -> list[Engine]:
        return [r.engine for r in self.replicas()]

    # -- requests ---------------------------------------------------------------------------
    def _chain(self, name: str, placed: Placed | None = None) -> list[str]:
        """The model asked for, then its fallbacks (each once; unknown ones, and those the
        request's key may not use, skipped)."""
        first = self.resolve(name)
        chain = [first]
        for fallback in self._models[first].fallbacks:
            canonical = self._aliases.get(fallback, fallback)
            if canonical not in self._models or canonical in chain:
                continue
            if placed is not None and not (placed.may_use(fallback)
                                           or placed.may_use(canonical)):
                continue
            chain.append(canonical)
        return chain

    async def _run(self, request: R, call: Callable[[Replica, R, Admission], Awaitable[T]],
                   placed: Placed | None, stream: bool = False) -> T:
        """``call`` on replicas in turn until one answers (see the module docstring), once
        the model's queue has admitted the request (a stream takes over its admission)."""
        if self.tracer is None or (tracer := current_tracer()) is None:
            return await self._admitted(request, call, placed, None)
        route = RouteTrace(tracer, request, self.routing_of(request.model), stream)
        try:
            result = await self._admitted(request, call, placed, route)
        except BaseException as exc:
            route.end(exc)
            raise
        if not stream:  # a stream's route ends with it (RouteTrace.attempt)
            route.end(None)
        return result

    async def _admitted(self, request: R,
                        call: Callable[[Replica, R, Admission], Awaitable[T]],
                        placed: Placed | None, route: RouteTrace | None) -> T:
        """``_attempts`` once the model's queue has admitted the request (its wait is within
        the route's span)."""
        chain = self._chain(request.model, placed)
        queued = self.queue.config.enabled
        if placed is None:
            admission = await self.queue.admit(chain[0])
        else:
            admission = await self.queue.admit(chain[0], placed.flow, placed.flow_name,
                                               placed.priority, placed.flow_weight,
                                               placed.group, placed.group_weight)
        try:
            return await self._attempts(request, call, placed, chain, admission, queued, route)
        finally:
            if not admission.handed:
                admission.close()

    def _prefix_key(self, request: object, chain: list[str]) -> int | None:
        """The digest of the request's routing key when a model of ``chain`` is routed by
        ``prefix`` among several replicas (None: no model needs it, or the request has none)."""
        if not isinstance(request, (ChatCompletionRequest, CompletionRequest)):
            return None
        for model in chain:
            entry = self._models[model]
            if (entry.routing or self.routing) == "prefix" and len(entry.replicas) > 1:
                text = affinity.routing_key(request)
                return None if text is None else affinity.digest(text)
        return None

    async def _attempts(self, request: R, call: Callable[[Replica, R, Admission], Awaitable[T]],
                        placed: Placed | None, chain: list[str], admission: Admission,
                        queued: bool, route: RouteTrace | None) -> T:
        tried: set[str] = set()
        error: UpstreamError | None = None
        key = self._prefix_key(request, chain)
        for model in chain:
            req = request if model == self.resolve(request.model) else request.model_copy(
                update={"model": model})
            for _ in range(self.max_attempts):
                try:
                    # admitted: to a replica with room, if one has (the load may have moved)
                    full = self._full(model) if queued and model == chain[0] and len(
                        self._models[model].replicas) > 1 else set()
                    try:
                        replica = self.pick(model, tried | full, key) if full else None
                    except Unavailable:
                        replica = None
                    replica = replica or self.pick(model, tried, key)
                except Unavailable:
                    break
                tried.add(replica.id)
                if placed is not None:
                    placed.replica = replica.id
                replica.in_flight += 1
                started = time.perf_counter()
                try:
                    attempt = call(replica, req, admission)
                    result = await (attempt if route is None
                                    else route.attempt(replica, model, attempt))
                except UpstreamUnavailable as exc:
                    replica.record_failure(exc.message)
                    error = exc
                    continue
                finally:
                    replica.in_flight -= 1
                    self.queue.wake(replica.model)
                replica.record_success(time.perf_counter() - started)
                return result
        if error is not None:
            raise error
        raise Unavailable(f"No replica of model '{request.model}' is available.")

    async def chat(self, request: ChatCompletionRequest,
                   placed: Placed | None = None) -> ChatCompletion:
        return await self._run(request, lambda r, q, _: r.engine.chat(q), placed)

    async def complete(self, request: CompletionRequest,
                       placed: Placed | None = None) -> TextCompletion:
        return await self._run(request, lambda r, q, _: r.engine.complete(q), placed)

    async def embed(self, request: EmbeddingRequest,
                    placed: Placed | None = None) -> EmbeddingList:
        return await self._run(request, lambda r, q, _: r.engine.embed(q), placed)

    async def images(self, request: ImageGenerationRequest, progress: Progress | None = None,
                     placed: Placed | None = None) -> ImagesAnswer:
        return await self._run(request, lambda r, q, _: r.engine.images(q, progress), placed)

    async def rerank(self, request: RerankRequest,
                     placed: Placed | None = None) -> RerankAnswer:
        return await self._run(request, lambda r, q, _: r.engine.rerank(q), placed)

    async def score(self, request: ScoreRequest,
                    placed: Placed | None = None) -> ScoreList:
        return await self._run(request, lambda r, q, _: r.engine.score(q), placed)

    async def forward(self, request: Forward, placed: Placed | None = None) -> Forwarded:
        return await self._run(request, lambda r, q, _: r.engine.forward(q), placed)

    def serving(self, capability: str) -> list[str]:
        """The models with a replica that declares ``capability``."""
        return [e.name for e in self.entries()
                if any(capability in r.engine.capabilities for r in e.replicas)]


    async def chat_stream(self, request: ChatCompletionRequest,
                          placed: Placed | None = None) -> AsyncIterator[Chunk]:
        return await self._run(
            request, lambda r, q, a: _started(r, r.engine.chat_stream(q), a), placed, stream=True)

    async def complete_stream(self, request: CompletionRequest,
                              placed: Placed | None = None) -> AsyncIterator[Chunk]:
        return await self._run(
            request, lambda r, q, a: _started(r, r.engine.complete_stream(q), a), placed,
            stream=True)


def _round_robin(entry: ModelEntry, ready: list[Replica]) -> Replica:
    """Smooth weighted round-robin: each replica gains its weight, the richest is chosen and
    pays the total; over ``sum(w)`` picks each is chosen ``w`` times, evenly spread."""
    total = sum(r.weight for r in ready)
    credit = entry.credit
    for r in ready:
        credit[r.id] = credit.get(r.id, 0.0) + r.weight
    best = max(ready, key=lambda r: credit[r.id])
    credit[best.id] -= total
    if len(credit) > 4 * len(entry.replicas) + 8:  # forget replicas gone long ago
        live = {r.id for r in entry.replicas}
        for gone in [k for k in credit if k not in live]:
            del credit[gone]
    return best


async def _started(replica: Replica, stream: AsyncIterator[Chunk],
                   admission: Admission) -> AsyncIterator[Chunk]:
    """Prime ``stream`` (errors before its first chunk may be retried), then count it; it
    closes the request's admission when it ends (its replica has room again)."""
    first = await primed(stream)
    replica.in_flight += 1  # ``_run`` releases its own count when this returns
    admission.handed = True
    return _counted(replica, first, admission)


async def _counted(replica: Replica, stream: AsyncIterator[Chunk],
                   admission: Admission) -> AsyncIterator[Chunk]:
    try:
        async for chunk in stream:
            yield chunk
    except UpstreamError as exc:
        replica.record_failure(exc.message)
        raise
    finally:
        replica.in_flight -= 1
        admission.close()
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
