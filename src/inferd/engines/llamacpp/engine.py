"""GGUF models run in this process by llama.cpp (``llama-cpp-python``).

Requests become sequences of a ``BatchLoop`` (continuous batching on one llama.cpp context per
loaded copy); this module turns OpenAI requests into token prompts and sampling parameters and
hands text pieces back to the event loop. A cancelled generation (client gone) frees its sequence
at the next decode step.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inferd.engines import families, jsongrammar, schema_bounds, tools
from inferd.engines.base import Chunk, LogprobEntry, ModelInfo
from inferd.engines.llamacpp.batch import BatchLoop, Event, SeqRequest
from inferd.engines.llamacpp.sampling import SamplingParams, grammar_error
from inferd.engines.local import Generation, GenerationParams, LocalTextEngine
from inferd.engines.residency import IdleTimer, Residency
from inferd.errors import ContextLengthExceeded, InvalidRequest, UnsupportedParameter
from inferd.numerals import ascii_int
from inferd.schemas.answers import ChatCompletion, TextCompletion
from inferd.schemas.openai import ChatCompletionRequest, CompletionRequest, Prompt
from inferd.settings import ModelSpec

# Defaults of the OpenAI API where llama.cpp's differ.
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 1.0
# A text longer than the context times this many characters cannot fit in it: refused before
# tokenizing (no vocabulary has tokens this long on average).
MAX_CHARS_PER_TOKEN = 64
DEFAULT_COMPLETION_TOKENS = 16  # /v1/completions without max_tokens, as OpenAI does
# The weights' own context is only used for tokenizing; sequences live in the batch contexts.
TOKENIZER_CTX = 64
# The most rows llama.cpp computes in one pass where it runs AMX kernels (see ``_load``).
AMX_UBATCH = 31


class LlamaSampling(BaseModel):
    """llama.cpp's own sampling fields, accepted beside OpenAI's."""

    model_config = ConfigDict(extra="forbid")
    top_k: int | None = Field(default=None, ge=0, le=100_000)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    typical_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repeat_penalty: float | None = Field(default=None, gt=0.0, le=10.0)


    cache_prompt: bool | None = None


class _Copy:
    """One loaded copy of the weights and the batch loop running its sequences; ``llama``
    holds the vocabulary only (tokenizer, chat template, metadata)."""

    def __init__(self, llama: Any, weights: Any, loop: BatchLoop) -> None:
        self.llama = llama
        self.weights = weights
        self.loop = loop
        self.load = 0  # sequences submitted and not yet done

    def close(self) -> None:
        import llama_cpp

        self.loop.close()
        llama_cpp.llama_model_free(self.weights)
        self.llama.close()


class LlamaCppEngine(LocalTextEngine):
    """Chat and text completions from a GGUF file."""

    kind = "llamacpp"
    extra_fields = frozenset({"top_k", "min_p", "repeat_penalty", "typical_p", "cache_prompt"})
    max_choices = 16

    def __init__(self, spec: ModelSpec, residency: Residency | None = None) -> None:
        """``residency``: the process's budget of loaded models (its own, unbounded, when
        none is given)."""
        super().__init__(spec.name)
        self.spec = spec
        self.residency = residency or Residency()
        self._copies: list[_Copy] = []
        self._formatter: Any = None
        self._family: families.Family = families.Family()
        self._n_ctx = spec.n_ctx
        self._metadata: dict[str, str] = {}
        self._native_tools = False  # whether the chat template renders ``tools`` itself
        self._loaded_once = False
        self.state = "unloaded"
        self.active = 0  # requests running or waiting for the load
        self.last_used = 0.0
        self._lock = asyncio.Lock()
        self._timer = IdleTimer(self, spec.keep_alive)
        self.threads = spec.n_threads or default_threads()

    # -- lifecycle ------------------------------------------------------------------------
    def _load(self) -> _Copy:
        import llama_cpp
        from llama_cpp import Llama

        from inferd.engines.llamacpp.backends import amx_in_use, backend_dir, load_backends

        if load_backends() == 0:
            raise RuntimeError(f"llama.cpp found no CPU backend in {backend_dir()}")
        llama = Llama(model_path=self.spec.path, n_ctx=TOKENIZER_CTX, n_batch=TOKENIZER_CTX,
                      n_threads=self.threads, n_threads_batch=self.threads, vocab_only=True,
                      verbose=False)
        weights = llama_cpp.llama_model_load_from_file(
            self.spec.path.encode(), llama_cpp.llama_model_default_params())
        if not weights:
            llama.close()
            raise RuntimeError(f"llama.cpp could not load {self.spec.path}")
        try:
            loop = BatchLoop(weights, parallel=self.spec.parallel, n_ctx_seq=self.spec.n_ctx,
                             n_batch=self.spec.n_batch, n_threads=self.threads,
                             cache_prompt=self.spec.cache_prompt,
                             # llama.cpp's AMX kernels, in the version pinned here, compute
                             # wrong products for Q4_0/Q4_1 weights in batches of 32 rows or
                             # more (a prompt read at once: the bundled model's predictions
                             # then depend on how its prompt was split, and are worse read
                             # whole); below that every batch size gives the same logits.
                             n_ubatch=AMX_UBATCH if amx_in_use() else None)
        except BaseException:
            llama_cpp.llama_model_free(weights)
            llama.close()
            raise
        self._n_ctx = loop.n_ctx_seq
        return _Copy(llama, weights, loop)

    async def start(self) -> None:
        self.residency.register(self)
        if self.spec.load == "startup":
            await self.load()

    async def load(self) -> None:
        """Load the weights unless loaded; concurrent callers wait for the same load."""
        async with self._lock:
            if self.state == "loaded":
                return
            self.state = "loading"
            try:
                await self.residency.make_room(self)
                await self._load_copies()
            except BaseException:
                self.state = "unloaded"
                await self._free_copies()
                raise
            self.state = "loaded"
            self._loaded_once = True
            self._timer.touch()

    async def _load_copies(self) -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        for _ in range(self.spec.instances):
            self._copies.append(await asyncio.to_thread(self._load))
        first = self._copies[0].llama
        self._metadata = dict(first.metadata)
        self._family = families.detect(self._metadata, self.spec.family)
        template = self._metadata.get("tokenizer.chat_template") or self._family.fallback_template
        eos = first._model.token_get_text(first.token_eos()) if first.token_eos() >= 0 else ""
        bos = first._model.token_get_text(first.token_bos()) if first.token_bos() >= 0 else ""
        self._native_tools = tools.template_renders_tools(template)
        self._formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos,
                                              add_generation_prompt=True)

    async def unload(self) -> bool:
        """Free the weights if no request is running; False when busy."""
        async with self._lock:
            if self.active:
                return False
            self._timer.cancel()
            await self._free_copies()
            self.state = "unloaded"
            return True

    async def _free_copies(self) -> None:
        while self._copies:
            copy = self._copies.pop()
            await asyncio.to_thread(copy.close)

    async def close(self) -> None:
        self._timer.cancel()
        await self._free_copies()
        self.state = "unloaded"
        self.residency.forget(self)

    def ready(self) -> bool:
        # Once loaded, an unloaded model loads again on its next request (as on-demand ones do).
        return self.state == "loaded" or self.spec.load == "on_demand" or self._loaded_once

    # -- requests keep the model loaded while they run ------------------------------------
    @contextlib.asynccontextmanager
    async def _in_use(self) -> AsyncIterator[None]:
        """Counts a request as running (loading the model first) until it ends."""
        self.active += 1
        try:
            await self.load()
            yield
        finally:
            self.active -= 1
            self._timer.touch()

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletion:
        async with self._in_use():
            return await super().chat(request)

    async def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[Chunk]:
        async with self._in_use():
            async for chunk in super().chat_stream(request):
                yield chunk

    async def complete(self, request: CompletionRequest) -> TextCompletion:
        async with self._in_use():
            return await super().complete(request)

    async def complete_stream(self, request: CompletionRequest) -> AsyncIterator[Chunk]:
        async with self._in_use():
            async for chunk in super().complete_stream(request):
                yield chunk

    def info(self) -> ModelInfo:
        return ModelInfo(name=self.name, kind=self.kind, capabilities=self.capabilities,
                         context_length=self._n_ctx)

    # -- request preparation --------------------------------------------------------------
    def _tokenize(self, text: str, add_bos: bool, special: bool) -> list[int]:
        if len(text) > self._n_ctx * MAX_CHARS_PER_TOKEN:
            # no token is this long: the text cannot fit, whatever its tokens (refused before
            # the tokenizer spends seconds on megabytes)
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self._n_ctx} tokens. However, your "
                f"prompt is {len(text)} characters long, more than {self._n_ctx} tokens can "
                "hold.", param="messages" if special else "prompt")
        llama = self._copies[0].llama
        tokens: list[int] = llama.tokenize(text.encode("utf-8"), add_bos=add_bos,
                                           special=special)
        return tokens

    def _limit(self, request: ChatCompletionRequest | CompletionRequest,
               limit: int | None, n_prompt: int, default_limit: int | None) -> int:
        if n_prompt >= self._n_ctx:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self._n_ctx} tokens. However, your "
                f"prompt is {n_prompt} tokens long.", param="messages"
                if isinstance(request, ChatCompletionRequest) else "prompt")
        if limit is not None and n_prompt + limit > self._n_ctx:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self._n_ctx} tokens. However, you "
                f"requested {n_prompt + limit} tokens ({n_prompt} in the prompt, {limit} for the "
                "completion). Please reduce the prompt or the completion length.",
                param="max_tokens")
        if limit is None:
            limit = min(default_limit or self._n_ctx, self._n_ctx - n_prompt)
        return limit

    def _sampling(self, request: ChatCompletionRequest | CompletionRequest,
                  limit: int | None, n_prompt: int, default_limit: int | None
                  ) -> GenerationParams:
        extra = request.model_extra or {}
        try:
            own = LlamaSampling.model_validate(
                {k: v for k, v in extra.items() if k in self.extra_fields})
        except ValidationError as exc:
            first = exc.errors()[0]
            name = str(first["loc"][0]) if first["loc"] else None
            raise InvalidRequest(f"Invalid value for '{name}': {first['msg']}",
                                 param=name, code="invalid_value") from exc
        sampling = SamplingParams(
            temperature=DEFAULT_TEMPERATURE if request.temperature is None
            else request.temperature,
            top_p=DEFAULT_TOP_P if request.top_p is None else request.top_p,
            top_k=own.top_k or 0, min_p=own.min_p or 0.0,
            typical_p=1.0 if own.typical_p is None else own.typical_p,
            repeat_penalty=own.repeat_penalty or 1.0,
            presence_penalty=request.presence_penalty or 0.0,
            frequency_penalty=request.frequency_penalty or 0.0, seed=request.seed,
            logit_bias=self._logit_bias(request.logit_bias) if request.logit_bias else {})
        return GenerationParams(
            max_tokens=self._limit(request, limit, n_prompt, default_limit),
            stop=request.stop_list(), sampling=sampling,
            # The prompt cache is on unless the model's settings or the request turn it off.
            cache_prompt=self.spec.cache_prompt and own.cache_prompt is not False)

    def _logit_bias(self, bias: dict[str, float]) -> dict[int, float]:
        vocabulary = self._copies[0].loop.n_vocab
        out: dict[int, float] = {}
        for key, value in bias.items():
            token = ascii_int(key)
            if token is None or token >= vocabulary:
                raise InvalidRequest(f"logit_bias: '{key}' is not a token id of this model "
                                     f"(0 to {vocabulary - 1}).", param="logit_bias")
            if not -100 <= value <= 100:
                raise InvalidRequest("logit_bias values must be between -100 and 100.",
                                     param="logit_bias")
            out[token] = value
        return out

    def prepare_chat(self, request: ChatCompletionRequest) -> Generation:
        self.check_fields(request)
        messages, tool_plan, native = tools.chat_messages(request, self._native_tools)
        prepared = self._formatter(messages=self._family.prepare(messages), tools=native)
        tokens = self._tokenize(prepared.prompt, add_bos=not prepared.added_special, special=True)
        params = self._sampling(request, request.token_limit(), len(tokens), None)
        stops = list(params.stop) + [s for s in self._family.extra_stop
                                     if s not in params.stop]
        if prepared.stop:
            extra = [prepared.stop] if isinstance(prepared.stop, str) else list(prepared.stop)
            stops += [s for s in extra if s not in stops]
        # A forced call ends where its grammar ends: no stop string may cut it short.
        params.stop = [] if tool_plan is not None and tool_plan.required else stops
        if request.logprobs:
            params.logprobs = request.top_logprobs or 0
        elif request.top_logprobs:
            raise InvalidRequest("'top_logprobs' requires 'logprobs' to be true.",
                                 param="top_logprobs")
        return Generation(prompt=tokens, prompt_tokens=len(tokens), params=params,
                          tools=tool_plan)

    async def prepared_chat(self, request: ChatCompletionRequest) -> Generation:
        generation = await self.prepare_chat_off_loop(request)
        fmt = request.response_format
        if generation.tools is None and (fmt is None or fmt.type == "text"):
            return generation  # no grammar: no trip to a worker thread
        # Converting a schema and parsing its grammar take time in proportion to the schema:
        # done on a worker thread, the event loop keeps serving meanwhile.
        _sampler(generation).grammar = await asyncio.to_thread(
            self._request_grammar, request, generation.tools)
        return generation

    def _request_grammar(self, request: ChatCompletionRequest,
                         tool_plan: tools.ToolPlan | None) -> str | None:
        """The request's grammar, its schemas within ``schema_bounds``; off the event loop."""
        if tool_plan is None:
            return self._grammar(request)
        for index, tool in enumerate(request.tools or []):
            function = tool.get("function")
            parameters = function.get("parameters") if isinstance(function, dict) else None
            if parameters:
                schema_bounds.check_schema(parameters, f"tools[{index}].function.parameters")
        # With tools, a response_format shapes the text answer only (a forced call has none).
        grammar = tools.grammar_text(tool_plan, self._grammar(request))
        schema_bounds.check_grammar(grammar, "tools")
        if (reason := grammar_error(self._copies[0].loop.vocab, grammar)) is not None:
            raise InvalidRequest(f"The functions' 'parameters' schemas are not supported: "
                                 f"{reason}", param="tools", code="invalid_value")
        return grammar

    def _grammar(self, request: ChatCompletionRequest) -> str | None:
        fmt = request.response_format
        if fmt is None or fmt.type == "text":
            return None
        if fmt.type == "json_object":
            return jsongrammar.JSON_OBJECT
        schema = (fmt.json_schema or {}).get("schema")
        if not isinstance(schema, dict):
            raise InvalidRequest("response_format.json_schema.schema must be a JSON schema "
                                 "object", param="response_format.json_schema.schema")
        schema_bounds.check_schema(schema, "response_format.json_schema.schema")
        try:
            grammar = jsongrammar.schema_gbnf(schema)
        except Exception as exc:  # the converter raises plain exceptions for bad schemas
            raise InvalidRequest(f"response_format.json_schema is not supported: {exc}",
                                 param="response_format.json_schema") from exc
        schema_bounds.check_grammar(grammar, "response_format.json_schema.schema")
        if (reason := grammar_error(self._copies[0].loop.vocab, grammar)) is not None:
            raise InvalidRequest(f"response_format.json_schema is not supported: {reason}",
                                 param="response_format.json_schema")
        return grammar

    def _token_ids(self, ids: list[int]) -> list[int]:
        vocabulary = self._copies[0].loop.n_vocab
        if any(i >= vocabulary for i in ids):
            raise InvalidRequest(f"The prompt holds a token id that is not a token of the model "
                                 f"'{self.name}' (0 to {vocabulary - 1}).", param="prompt")
        return ids

    def _detokenize(self, ids: list[int]) -> str:
        text: bytes = self._copies[0].llama.detokenize(ids, special=False)
        return text.decode("utf-8", errors="replace")

    def prepare_text(self, request: CompletionRequest, prompt: Prompt) -> Generation:
        """``prompt`` is text, or token ids of this model's tokenizer."""
        self.check_fields(request)
        if request.suffix is not None:
            raise UnsupportedParameter(
                f"The model '{self.name}' does not support 'suffix'.", param="suffix")
        if request.best_of not in (None, 1):
            raise UnsupportedParameter(f"The model '{self.name}' supports only best_of=1.",
                                       param="best_of")
        if request.logprobs is not None and not 0 <= request.logprobs <= 5:
            raise InvalidRequest("'logprobs' must be between 0 and 5.", param="logprobs")
        tokens = (self._tokenize(prompt, add_bos=True, special=False)
                  if isinstance(prompt, str) else self._token_ids(prompt))
        params = self._sampling(request, request.token_limit(), len(tokens),
                                DEFAULT_COMPLETION_TOKENS)
        if request.logprobs is not None:
            params.logprobs = request.logprobs
        if request.echo:
            params.echo = prompt if isinstance(prompt, str) else self._detokenize(prompt)
        return Generation(prompt=tokens, prompt_tokens=len(tokens), params=params)

    # -- generation -----------------------------------------------------------------------
    def _sequence(self, generation: Generation, stream: bool,
                  emit: Callable[[Event], object]) -> SeqRequest:
        params, prompt = generation.params, generation.prompt
        assert not isinstance(prompt, str) and params.max_tokens is not None  # prepare_*
        return SeqRequest(
            prompt=list(prompt), params=_sampler(generation), max_tokens=params.max_tokens,
            stops=params.stop, emit=emit, stream=stream, logprobs=params.logprobs,
            cache_prompt=params.cache_prompt, cancelled=threading.Event())

    def _submit(self, leader: SeqRequest) -> _Copy:
        """Run ``leader`` (and its followers) on the least busy copy."""
        copy = min(self._copies, key=lambda c: c.load)
        copy.load += 1 + len(leader.followers)
        copy.loop.submit(leader)
        return copy

    async def generate(self, generation: Generation, stream: bool = True) -> AsyncIterator[str]:
        """Run the prompt as one sequence of the least busy copy's batch.

        Without ``stream`` the engine thread keeps the text until the end, so the event loop is
        woken once per request instead of once per token.
        """
        async for _, piece, _ in self.merged([generation], stream):
            if piece is not None:
                yield piece

    async def merged(self, generations: list[Generation], stream: bool = True,
                     ) -> AsyncIterator[tuple[int, str | None, list[LogprobEntry]]]:
        """All generations as sequences of the batch; the choices of one prompt (``n > 1``)
        follow its first choice, so the prompt is read once and its KV cells copied."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        requests = [self._sequence(g, stream, functools.partial(_deliver, loop, events, i))
                    for i, g in enumerate(generations)]
        position = {id(g): i for i, g in enumerate(generations)}
        leaders = []
        for generation, request in zip(generations, requests, strict=True):
            first = position.get(id(generation.first))
            if first is None:
                leaders.append(request)
            else:
                requests[first].followers.append(request)
        copies = [(self._submit(leader), 1 + len(leader.followers)) for leader in leaders]
        try:
            for index, generation in enumerate(generations):
                if generation.params.echo is not None:
                    yield index, generation.params.echo, []
            done = 0
            while done < len(requests):
                index, (kind, value) = await events.get()
                if kind == "error":
                    raise value
                if kind == "done":
                    done += 1
                    _settle(generations[index], requests[index])
                    yield index, None, []
                    continue
                text, entries = value
                generations[index].logprobs.extend(entries)
                yield index, text, entries
        finally:
            for generation, request in zip(generations, requests, strict=True):
                request.cancelled.set()
                _settle(generation, request)
            for copy, load in copies:
                copy.load -= load


def default_threads() -> int:
    """Half the cores this process may run on (at least 1), as llama-cpp-python does.

    Not every core: llama.cpp's threads spin at each barrier of a decode, and when one of them
    is descheduled on a machine that is busy with other work, the others wait for it; with a
    thread on every core a decode step can take ten times longer than with half of them.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // 2)


def _settle(generation: Generation, request: SeqRequest) -> None:
    """What the engine thread counted, onto the generation."""
    generation.completion_tokens = request.completion_tokens
    generation.finish_reason = request.finish_reason
    generation.cached_tokens = request.cached_tokens


def _sampler(generation: Generation) -> SamplingParams:
    """The llama.cpp sampler settings ``prepare_*`` gave the generation."""
    sampling = generation.params.sampling
    assert isinstance(sampling, SamplingParams)
    return sampling


def _deliver(loop: asyncio.AbstractEventLoop, events: asyncio.Queue[tuple[int, Event]],
             index: int, event: Event) -> None:
    """Hand choice ``index``'s event to its event loop; a loop already closed has no reader."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(events.put_nowait, (index, event))
