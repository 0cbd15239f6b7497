"""GGUF models run in this process by llama.cpp (``llama-cpp-python``).

A ``Llama`` object is not thread-safe, so each loaded copy ("instance") is used by one request
at a time, on a thread of its own so the event loop never blocks. Requests wait for a free
instance in arrival order (``asyncio.Queue`` serves its getters first come, first served).
Generation checks a cancel flag at every token, so a client that goes away stops the work.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inferd.engines import families
from inferd.engines.base import ModelInfo
from inferd.engines.local import Generation, LocalTextEngine
from inferd.errors import ContextLengthExceeded, InvalidRequest, UnsupportedParameter
from inferd.schemas.openai import ChatCompletionRequest, CompletionRequest, Prompt
from inferd.settings import ModelSpec

# Defaults of the OpenAI API where llama.cpp's differ.
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 1.0
DEFAULT_COMPLETION_TOKENS = 16  # /v1/completions without max_tokens, as OpenAI does


class LlamaSampling(BaseModel):
    """llama.cpp's own sampling fields, accepted beside OpenAI's."""

    model_config = ConfigDict(extra="forbid")
    top_k: int | None = Field(default=None, ge=0, le=100_000)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    typical_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repeat_penalty: float | None = Field(default=None, gt=0.0, le=10.0)


@dataclass
class _Instance:
    llama: Any
    thread: ThreadPoolExecutor


class _Cancelled(Exception):
    pass


class LlamaCppEngine(LocalTextEngine):
    """Chat and text completions from a GGUF file."""

    kind = "llamacpp"
    extra_fields = frozenset({"top_k", "min_p", "repeat_penalty", "typical_p"})

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec.name)
        self.spec = spec
        self._pool: asyncio.Queue[_Instance] = asyncio.Queue()
        self._instances: list[_Instance] = []
        self._formatter: Any = None
        self._family: families.Family = families.Family()
        self._n_ctx = spec.n_ctx
        self._metadata: dict[str, str] = {}

    # -- lifecycle ------------------------------------------------------------------------
    def _load(self) -> Any:
        from llama_cpp import Llama

        return Llama(model_path=self.spec.path, n_ctx=self.spec.n_ctx,
                     n_threads=self.spec.n_threads, n_threads_batch=self.spec.n_threads,
                     n_batch=self.spec.n_batch, verbose=False)

    async def start(self) -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        for index in range(self.spec.instances):
            thread = ThreadPoolExecutor(1, thread_name_prefix=f"llama-{self.name}-{index}")
            llama = await asyncio.get_running_loop().run_in_executor(thread, self._load)
            instance = _Instance(llama, thread)
            self._instances.append(instance)
            self._pool.put_nowait(instance)
        first = self._instances[0].llama
        self._n_ctx = first.n_ctx()
        self._metadata = dict(first.metadata)
        self._family = families.detect(self._metadata, self.spec.family)
        template = self._metadata.get("tokenizer.chat_template") or self._family.fallback_template
        eos = first._model.token_get_text(first.token_eos()) if first.token_eos() >= 0 else ""
        bos = first._model.token_get_text(first.token_bos()) if first.token_bos() >= 0 else ""
        self._formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos,
                                              add_generation_prompt=True)

    async def close(self) -> None:
        while self._instances:
            instance = self._instances.pop()
            instance.thread.shutdown(wait=True)
            instance.llama.close()

    def ready(self) -> bool:
        return bool(self._instances)

    def info(self) -> ModelInfo:
        return ModelInfo(name=self.name, kind=self.kind, capabilities=self.capabilities,
                         context_length=self._n_ctx,
                         details={"family": self._family.name, "path": self.spec.path,
                                  "instances": self.spec.instances,
                                  "architecture": self._metadata.get("general.architecture")})

    # -- request preparation --------------------------------------------------------------
    def _tokenize(self, text: str, add_bos: bool, special: bool) -> list[int]:
        llama = self._instances[0].llama
        tokens: list[int] = llama.tokenize(text.encode("utf-8"), add_bos=add_bos,
                                           special=special)
        return tokens

    def _sampling(self, request: ChatCompletionRequest | CompletionRequest,
                  limit: int | None, n_prompt: int, default_limit: int | None) -> dict[str, Any]:
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
            limit = default_limit or self._n_ctx - n_prompt
            limit = min(limit, self._n_ctx - n_prompt)
        extra = request.model_extra or {}
        params: dict[str, Any] = {
            "max_tokens": limit,
            "temperature": DEFAULT_TEMPERATURE if request.temperature is None
            else request.temperature,
            "top_p": DEFAULT_TOP_P if request.top_p is None else request.top_p,
            "stop": request.stop_list(),
            "seed": request.seed,
            "presence_penalty": request.presence_penalty or 0.0,
            "frequency_penalty": request.frequency_penalty or 0.0,
        }
        try:
            sampling = LlamaSampling.model_validate(
                {k: v for k, v in extra.items() if k in self.extra_fields})
        except ValidationError as exc:
            first = exc.errors()[0]
            name = str(first["loc"][0]) if first["loc"] else None
            raise InvalidRequest(f"Invalid value for '{name}': {first['msg']}",
                                 param=name, code="invalid_value") from exc
        params.update(sampling.model_dump(exclude_none=True))
        if request.logit_bias:
            params["logit_bias"] = self._logit_bias(request.logit_bias)
        return params

    def _logit_bias(self, bias: dict[str, float]) -> dict[int, float]:
        vocabulary = self._instances[0].llama.n_vocab()
        out: dict[int, float] = {}
        for key, value in bias.items():
            if not key.isdigit() or int(key) >= vocabulary:
                raise InvalidRequest(f"logit_bias: '{key}' is not a token id of this model "
                                     f"(0 to {vocabulary - 1}).", param="logit_bias")
            if not -100 <= value <= 100:
                raise InvalidRequest("logit_bias values must be between -100 and 100.",
                                     param="logit_bias")
            out[int(key)] = value
        return out

    def prepare_chat(self, request: ChatCompletionRequest) -> Generation:
        self.check_fields(request)
        for name in ("tools", "logprobs"):
            if getattr(request, name):
                raise UnsupportedParameter(
                    f"The model '{self.name}' does not support '{name}'.", param=name)
        if request.tool_choice not in (None, "none"):
            raise UnsupportedParameter(
                f"The model '{self.name}' does not support 'tool_choice'.", param="tool_choice")
        messages = []
        for index, message in enumerate(request.messages):
            try:
                messages.append({"role": message.role, "content": message.text()})
            except ValueError as exc:
                raise UnsupportedParameter(str(exc), param=f"messages[{index}].content") from exc
        prepared = self._formatter(messages=self._family.prepare(messages))
        tokens = self._tokenize(prepared.prompt, add_bos=not prepared.added_special, special=True)
        params = self._sampling(request, request.token_limit(), len(tokens), None)
        stops = list(params["stop"]) + [s for s in self._family.extra_stop
                                        if s not in params["stop"]]
        if prepared.stop:
            extra = [prepared.stop] if isinstance(prepared.stop, str) else list(prepared.stop)
            stops += [s for s in extra if s not in stops]
        params["stop"] = stops
        grammar = self._grammar(request)
        if grammar is not None:
            params["grammar"] = grammar
        return Generation(prompt=tokens, prompt_tokens=len(tokens), params=params)

    def _grammar(self, request: ChatCompletionRequest) -> Any:
        fmt = request.response_format
        if fmt is None or fmt.type == "text":
            return None
        from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

        if fmt.type == "json_object":
            return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        schema = (fmt.json_schema or {}).get("schema")
        if not isinstance(schema, dict):
            raise InvalidRequest("response_format.json_schema.schema must be a JSON schema "
                                 "object", param="response_format.json_schema.schema")
        try:
            return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        except Exception as exc:  # the converter raises plain exceptions for bad schemas
            raise InvalidRequest(f"response_format.json_schema is not supported: {exc}",
                                 param="response_format.json_schema") from exc

    def _detokenize(self, ids: list[int]) -> str:
        llama = self._instances[0].llama
        text: bytes = llama.detokenize(ids, special=False)
        return text.decode("utf-8", errors="replace")

    def _token_ids(self, ids: list[int]) -> list[int]:
        vocabulary = self._instances[0].llama.n_vocab()
        if any(i >= vocabulary for i in ids):
            raise InvalidRequest(f"The prompt holds a token id that is not a token of the model "
                                 f"'{self.name}' (0 to {vocabulary - 1}).", param="prompt")
        return ids

    def prepare_text(self, request: CompletionRequest, prompt: Prompt) -> Generation:
        self.check_fields(request)
        for name in ("suffix", "logprobs"):
            if getattr(request, name) is not None:
                raise UnsupportedParameter(
                    f"The model '{self.name}' does not support '{name}'.", param=name)
        if request.best_of not in (None, 1):
            raise UnsupportedParameter(f"The model '{self.name}' supports only best_of=1.",
                                       param="best_of")
        tokens = (self._tokenize(prompt, add_bos=True, special=False)
                  if isinstance(prompt, str) else self._token_ids(prompt))
        params = self._sampling(request, request.token_limit(), len(tokens),
                                DEFAULT_COMPLETION_TOKENS)
        generation = Generation(prompt=tokens, prompt_tokens=len(tokens), params=params)
        if request.echo:
            generation.echo = prompt if isinstance(prompt, str) else self._detokenize(prompt)
        return generation

    # -- generation -----------------------------------------------------------------------
    async def generate(self, generation: Generation, stream: bool = True) -> AsyncIterator[str]:
        """Run the model on its own thread; hand pieces over per token only when streaming.

        Without ``stream`` the thread keeps the text until the end, so the event loop is woken
        once per request instead of once per token (it would take CPU from llama.cpp's threads).
        """
        from llama_cpp import StoppingCriteriaList

        instance = await self._pool.get()
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancel = threading.Event()

        def stop_when_cancelled(_ids: Any, _logits: Any) -> bool:
            generation.completion_tokens += 1
            return cancel.is_set()

        def run() -> None:
            try:
                chunks = instance.llama.create_completion(
                    prompt=generation.prompt, stream=True,
                    stopping_criteria=StoppingCriteriaList([stop_when_cancelled]),
                    **generation.params)
                kept: list[str] = []
                finish = None
                for chunk in chunks:
                    if cancel.is_set():
                        break
                    choice = chunk["choices"][0]
                    if stream:
                        loop.call_soon_threadsafe(
                            pieces.put_nowait, ("text", (choice["text"], choice["finish_reason"])))
                    else:
                        kept.append(choice["text"])
                        finish = choice["finish_reason"] or finish
                if not stream:
                    loop.call_soon_threadsafe(pieces.put_nowait, ("text", ("".join(kept), finish)))
                loop.call_soon_threadsafe(pieces.put_nowait, ("end", None))
            except BaseException as exc:  # handed to the event loop, re-raised there
                loop.call_soon_threadsafe(pieces.put_nowait, ("error", exc))

        future = loop.run_in_executor(instance.thread, run)
        # The instance goes back to the pool only when its thread is done with it.
        future.add_done_callback(lambda _f: self._pool.put_nowait(instance))
        try:
            while True:
                kind, value = await pieces.get()
                if kind == "end":
                    # llama.cpp samples one token past the limit before it stops; it is not
                    # part of the answer.
                    generation.completion_tokens = min(generation.completion_tokens,
                                                       generation.params["max_tokens"])
                    return
                if kind == "error":
                    raise _map_error(value)
                text, finish = value
                if finish is not None:
                    generation.finish_reason = finish
                yield text
        finally:
            cancel.set()


def _map_error(exc: BaseException) -> BaseException:
    message = str(exc)
    if isinstance(exc, ValueError) and "exceed context window" in message:
        return ContextLengthExceeded(message, param="messages")
    return exc
