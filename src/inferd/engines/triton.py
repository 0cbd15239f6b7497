"""The ``triton`` replica kind: Triton Inference Server's generate extension, as its vLLM
backend serves it.

``POST /v2/models/{name}/generate`` takes ``{"text_input": ..., "parameters": {...}}``
(scalar sampling parameters; a list of stop strings goes in ``sampling_parameters`` as JSON
text) plus the backend's optional input tensors as top-level fields (``stream``,
``exclude_input_in_output``, ``return_finish_reason``, ``return_num_input_tokens``,
``return_num_output_tokens``) and answers ``{"model_name", "model_version", "text_output", ...}``.
``generate_stream`` answers the same objects as server-sent events, each ``text_output`` holding
only the new text; an error arrives as ``{"error": "..."}``, before or during the stream.
Triton takes plain text, so a chat is rendered with a chat template first (ChatML unless the
replica's options name another). ``tools`` are rendered by that template when it renders them,
else described in the system prompt (as on the local engine), and the answer's Hermes-style
``<tool_call>`` blocks are parsed back into ``tool_calls`` by the local engine's parser, streamed
too. No grammar constrains the upstream's output, so the model must be tuned for tool calls.
Only text content is read: an image part is a 400 (send images to an ``http`` replica).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import jinja2
import orjson

from inferd.engines import tools
from inferd.engines.base import Chunk, ModelInfo
from inferd.engines.families import CHATML_TEMPLATE, Family
from inferd.engines.remote import RemoteEngine, RemoteSpec, UpstreamUnavailable
from inferd.engines.toolparse import ToolStream, with_tool_calls
from inferd.errors import UnsupportedParameter, UpstreamError
from inferd.ids import new_id
from inferd.jsontypes import JsonObject
from inferd.schemas.answers import ChatCompletion, CompletionChoice, TextCompletion, Usage
from inferd.schemas.chunks import Delta
from inferd.schemas.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    chat_chunk,
    chat_completion,
    usage_chunk,
)

# OpenAI sampling fields and the vLLM sampling parameter each becomes.
SAMPLING = {"temperature": "temperature", "top_p": "top_p", "seed": "seed",
            "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty"}
# Non-OpenAI sampling fields vLLM understands, passed through when a client sends them.
EXTRA_SAMPLING = frozenset({"top_k", "min_p", "repetition_penalty", "ignore_eos", "min_tokens"})
REFUSED = ("response_format", "logprobs", "logit_bias", "suffix", "best_of")


def _scalar(value: Any) -> Any:
    """A one-element output tensor arrives as a list or as the bare value."""
    return value[0] if isinstance(value, list) and value else value


class TritonEngine(RemoteEngine):
    """Chat and text completions through Triton's ``generate`` / ``generate_stream``."""

    kind = "triton"
    capabilities = frozenset({"chat", "completions"})

    def __init__(self, name: str, spec: RemoteSpec) -> None:
        super().__init__(name, spec)
        root = spec.url.rstrip("/")
        self.generate_url = f"{root}/v2/models/{self.upstream_model}/generate"
        self.health_url = f"{root}/v2/health/ready"
        template = str(spec.options.get("chat_template") or CHATML_TEMPLATE)
        self.template = jinja2.Environment(autoescape=False).from_string(template)
        self.native_tools = tools.template_renders_tools(template)
        self.stop = [str(s) for s in spec.options.get("stop", ["<|im_end|>"])]
        # Servers older than r24.12 lack the token-count and finish-reason outputs.
        self.extra_outputs = bool(spec.options.get("extra_outputs", True))
        self.family = Family()

    def info(self) -> ModelInfo:
        return ModelInfo(name=self.name, kind=self.kind, capabilities=self.capabilities)

    async def probe(self) -> None:
        await self.get_ok(self.health_url)

    # -- request building -----------------------------------------------------------------
    def _check(self, request: ChatCompletionRequest | CompletionRequest) -> None:
        if request.n not in (None, 1):
            raise UnsupportedParameter(f"The model '{self.name}' supports only n=1.", param="n")
        for name in REFUSED:
            if getattr(request, name, None):
                raise UnsupportedParameter(
                    f"The model '{self.name}' does not support '{name}'.", param=name)

    def _body(self, request: ChatCompletionRequest | CompletionRequest, text: str | list[int],
              stream: bool) -> JsonObject:
        self._check(request)
        if not isinstance(text, str):  # the generate protocol takes text only
            raise UnsupportedParameter(f"The model '{self.name}' takes the prompt as text, not "
                                       "as token ids.", param="prompt")
        params: JsonObject = {}
        for field, name in SAMPLING.items():
            value = getattr(request, field)
            if value is not None:
                params[name] = value
        for name, value in (request.model_extra or {}).items():
            if name in EXTRA_SAMPLING and isinstance(value, int | float | bool):
                params[name] = value
        limit = request.token_limit()
        if limit is not None:
            params["max_tokens"] = limit
        stop = [*request.stop_list(), *self.stop]
        body: JsonObject = {"text_input": text, "stream": stream,
                            "exclude_input_in_output": True}
        if len(stop) > 1:
            # Request parameters must be scalars; a list of stop strings travels in the vLLM
            # backend's ``sampling_parameters`` input (JSON text), which takes precedence.
            body["sampling_parameters"] = orjson.dumps({**params, "stop": stop}).decode()
        else:
            if stop:
                params["stop"] = stop[0]
            body["parameters"] = params
        if self.extra_outputs:
            body.update(return_finish_reason=True, return_num_input_tokens=True,
                        return_num_output_tokens=True)
        return body

    def _prompt(self, request: ChatCompletionRequest) -> tuple[str, bool]:
        """The rendered chat, and whether the answer may hold tool calls."""
        messages, plan, native = tools.chat_messages(request, self.native_tools)
        prompt = self.template.render(messages=self.family.prepare(messages), tools=native,
                                      add_generation_prompt=True)
        return prompt, plan is not None

    # -- calls ----------------------------------------------------------------------------
    async def _generate(self, body: JsonObject) -> tuple[str, str, int, int]:
        response = await self.post(self.generate_url, body)
        result = await self.read_json(response)
        if not isinstance(result, dict) or "text_output" not in result:
            raise UpstreamUnavailable(f"The replica of '{self.name}' answered without text.")
        return (str(_scalar(result["text_output"])), _finish(result),
                int(_scalar(result.get("num_input_tokens", 0)) or 0),
                int(_scalar(result.get("num_output_tokens", 0)) or 0))

    async def _pieces(self, body: JsonObject, counts: _Counts) -> AsyncIterator[str]:
        """Text deltas of ``generate_stream``; fills ``counts`` (tokens, finish reason)."""
        response = await self.post(self.generate_url + "_stream", body)
        async for payload in self.sse_events(response):
            event = orjson.loads(payload)
            if "error" in event:
                raise UpstreamError(f"The replica of '{self.name}' failed: {event['error']}")
            counts.prompt = int(_scalar(event.get("num_input_tokens", 0)) or 0) or counts.prompt
            counts.completion += int(_scalar(event.get("num_output_tokens", 0)) or 0)
            counts.finish = _finish(event, counts.finish)
            text = str(_scalar(event.get("text_output", "")))
            if text:
                yield text

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletion:
        prompt_text, with_tools = self._prompt(request)
        text, finish, prompt, completion = await self._generate(
            self._body(request, prompt_text, stream=False))
        out = chat_completion(id=new_id("chatcmpl", "-"), model=request.model, text=text,
                              finish_reason=finish, prompt_tokens=prompt,
                              completion_tokens=completion)
        if with_tools:
            with_tool_calls(out.choices[0], text)
        return out

    async def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[Chunk]:
        prompt_text, with_tools = self._prompt(request)
        body = self._body(request, prompt_text, stream=True)
        counts = _Counts()
        cid, created, model = new_id("chatcmpl", "-"), int(time.time()), request.model
        parser = ToolStream() if with_tools else None
        role: Delta = {"role": "assistant"}  # on the first delta
        async for piece in self._pieces(body, counts):
            for delta in parser.feed(piece) if parser else [Delta(content=piece)]:
                yield chat_chunk(id=cid, model=model, created=created, delta={**role, **delta})
                role = {}
        for delta in parser.finish() if parser else []:
            yield chat_chunk(id=cid, model=model, created=created, delta={**role, **delta})
            role = {}
        finish = counts.finish
        if parser and parser.called and finish == "stop":
            finish = "tool_calls"
        yield chat_chunk(id=cid, model=model, created=created, delta={}, finish_reason=finish)
        yield usage_chunk(id=cid, model=model, created=created, obj="chat.completion.chunk",
                          prompt_tokens=counts.prompt, completion_tokens=counts.completion)

    async def complete(self, request: CompletionRequest) -> TextCompletion:
        choices, prompt_tokens, completion_tokens = [], 0, 0
        for index, prompt in enumerate(request.prompts()):
            text, finish, p, c = await self._generate(self._body(request, prompt, stream=False))
            prompt_tokens, completion_tokens = prompt_tokens + p, completion_tokens + c
            choices.append(CompletionChoice(text=text, index=index, logprobs=None,
                                            finish_reason=finish))
        return TextCompletion(id=new_id("cmpl", "-"), object="text_completion",
                              created=int(time.time()), model=request.model, choices=choices,
                              usage=Usage.of(prompt_tokens, completion_tokens))

    async def complete_stream(self, request: CompletionRequest) -> AsyncIterator[Chunk]:
        cid, created, model = new_id("cmpl", "-"), int(time.time()), request.model
        totals = _Counts()
        for index, prompt in enumerate(request.prompts()):
            counts = _Counts()
            async for piece in self._pieces(self._body(request, prompt, stream=True), counts):
                yield _text_chunk(cid, created, model, index, piece, None)
            yield _text_chunk(cid, created, model, index, "", counts.finish)
            totals.prompt += counts.prompt
            totals.completion += counts.completion
        yield usage_chunk(id=cid, model=model, created=created, obj="text_completion",
                          prompt_tokens=totals.prompt, completion_tokens=totals.completion)


@dataclass
class _Counts:
    """What a ``generate_stream`` reported: its tokens and finish reason."""

    prompt: int = 0
    completion: int = 0
    finish: str = "stop"


def _finish(event: JsonObject, default: str = "stop") -> str:
    reason = _scalar(event.get("finish_reason"))
    if reason in (None, "None", ""):
        return default
    return "length" if reason == "length" else "stop"


def _text_chunk(cid: str, created: int, model: str, index: int, text: str,
                finish: str | None) -> Chunk:
    return {"id": cid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"text": text, "index": index, "logprobs": None,
                         "finish_reason": finish}]}
