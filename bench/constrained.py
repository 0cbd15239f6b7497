"""Constrained output over many seeds at temperature 1, on ``inferd serve`` with the bundled
SmolLM2 model: how often an answer breaks the promise of its constraint.

- json_schema / json_object: answers with ``finish_reason: "stop"`` that do not parse (strict
  JSON: no raw control characters in strings) or do not validate against the schema, whole and
  streamed;
- forced tool calls (``required``, named; Anthropic ``any``/``tool``): answers that are not a
  call (no ``tool_calls``, markup in ``content``, arguments that do not parse), whole and
  streamed;
- a forced call cut by a small ``max_tokens``: answers with markup in ``content`` or no call;
- ``response_format`` together with a forced tool: answers that are not the call (a 400 too).

    .venv/bin/python bench/constrained.py [--seeds 20] [--url http://127.0.0.1:8000] [--only NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import jsonschema

from harness import start_inferd, stop

CHAT_MODEL = "smollm2-135m-instruct"
POEM = {"type": "object", "properties": {"title": {"type": "string"},
                                         "lines": {"type": "string"}},
        "required": ["title", "lines"]}
PERSON = {"type": "object", "properties": {
    "name": {"type": "string"}, "age": {"type": "integer"},
    "tags": {"type": "array", "items": {"type": "string"}},
    "address": {"$ref": "#/$defs/Address"}},
    "required": ["name", "age", "tags", "address"],
    "$defs": {"Address": {"type": "object", "properties": {
        "street": {"type": "string"}, "city": {"type": "string"}},
        "required": ["street", "city"]}}}
SCHEMAS = [("poem", POEM, "Write a short poem of four lines about the sea, as JSON."),
           ("person", PERSON, "Describe a made-up person and their address as JSON.")]
NOTE = {"type": "function", "function": {
    "name": "save_note", "description": "Save a note of several lines",
    "parameters": {"type": "object", "properties": {"title": {"type": "string"},
                                                    "body": {"type": "string"}},
                   "required": ["title", "body"]}}}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
NOTE_ASK = [{"role": "user", "content": "Save a note with a shopping list of five items, "
                                        "one per line."}]


def strict_json(text: str) -> Any:
    """``json.loads`` as the SDKs parse: raw control characters in strings are errors."""
    return json.loads(text)


async def sse(http: httpx.AsyncClient, path: str, body: dict[str, Any],
              ) -> list[dict[str, Any]]:
    events = []
    async with http.stream("POST", path, json={**body, "stream": True}) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
    return events


def chat_from_stream(events: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]], str]:
    """(content, tool calls, finish_reason) assembled from chat chunks."""
    content, calls, finish = "", {}, ""
    for event in events:
        for choice in event.get("choices") or []:
            delta = choice.get("delta") or {}
            content += delta.get("content") or ""
            for call in delta.get("tool_calls") or []:
                slot = calls.setdefault(call["index"], {"name": "", "arguments": ""})
                function = call.get("function") or {}
                slot["name"] += function.get("name") or ""
                slot["arguments"] += function.get("arguments") or ""
            finish = choice.get("finish_reason") or finish
    return content, [calls[i] for i in sorted(calls)], finish


# -- one request each: True when it kept its promise ------------------------------------------

def schema_ok(text: str, finish: str, schema: dict[str, Any] | None) -> bool:
    if finish != "stop":
        return True  # the promise holds for finished answers only
    try:
        value = strict_json(text)
    except ValueError:
        return False
    if schema is None:
        return isinstance(value, dict)
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError:
        return False
    return True


async def json_answer(http: httpx.AsyncClient, seed: int, stream: bool,
                      schema: dict[str, Any] | None, prompt: str) -> bool:
    fmt: dict[str, Any] = ({"type": "json_object"} if schema is None else
                           {"type": "json_schema", "json_schema": {"name": "out",
                                                                    "schema": schema}})
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": prompt}],
            "response_format": fmt, "temperature": 1, "seed": seed, "max_tokens": 160}
    if stream:
        content, _, finish = chat_from_stream(await sse(http, "/v1/chat/completions", body))
        return schema_ok(content, finish, schema)
    response = await http.post("/v1/chat/completions", json=body)
    choice = response.json()["choices"][0]
    return schema_ok(choice["message"]["content"] or "", choice["finish_reason"], schema)


def call_ok(content: str | None, calls: list[dict[str, Any]], finish: str,
            names: set[str], cut: bool = False) -> bool:
    """A call: no text, calls named after the functions, finished (``tool_calls``: every
    call's arguments parse) or cut by max_tokens (``length``: all but the last parse)."""
    ok = _call_ok(content, calls, finish, names, cut)
    if not ok:
        print(f"  broken: finish={finish} content={content!r:.80} calls={calls!r:.200}",
              file=sys.stderr)
    return ok


def _call_ok(content: str | None, calls: list[dict[str, Any]], finish: str,
             names: set[str], cut: bool) -> bool:
    if content or not calls or any(c["name"] not in names for c in calls):
        return False
    if finish not in ("tool_calls", "length") or (cut and finish != "length"):
        return False
    whole = calls if finish == "tool_calls" else calls[:-1]
    for call in whole:
        try:
            arguments = strict_json(call["arguments"])
        except ValueError:
            return False
        if not isinstance(arguments, dict):
            return False
    return True


async def forced_call(http: httpx.AsyncClient, seed: int, stream: bool, choice: Any,
                      max_tokens: int = 120, extra: dict[str, Any] | None = None) -> bool:
    body = {"model": CHAT_MODEL, "messages": NOTE_ASK, "tools": [NOTE, WEATHER],
            "tool_choice": choice, "temperature": 1, "seed": seed,
            "max_tokens": max_tokens, **(extra or {})}
    names = {"save_note", "get_weather"}
    cut = max_tokens < 20
    if stream:
        content, calls, finish = chat_from_stream(await sse(http, "/v1/chat/completions", body))
        return call_ok(content, calls, finish, names, cut)
    response = await http.post("/v1/chat/completions", json=body)
    if response.status_code != 200:
        return False
    answer = response.json()["choices"][0]
    message = answer["message"]
    calls = [c["function"] for c in message.get("tool_calls") or []]
    return call_ok(message.get("content"), calls, answer["finish_reason"], names, cut)


async def anthropic_call(http: httpx.AsyncClient, seed: int, stream: bool,
                         choice: dict[str, Any]) -> bool:
    tools = [{"name": t["function"]["name"], "description": t["function"]["description"],
              "input_schema": t["function"]["parameters"]} for t in (NOTE, WEATHER)]
    body = {"model": CHAT_MODEL, "max_tokens": 120, "messages": NOTE_ASK, "tools": tools,
            "tool_choice": choice, "temperature": 1}
    # the Messages API has no seed: each request samples anew
    del seed
    if stream:
        events = await sse(http, "/v1/messages", body)
        blocks: dict[int, dict[str, Any]] = {}
        stop_reason = ""
        for event in events:
            if event["type"] == "content_block_start":
                blocks[event["index"]] = {**event["content_block"], "json": ""}
            elif event["type"] == "content_block_delta":
                delta = event["delta"]
                block = blocks[event["index"]]
                if delta["type"] == "text_delta":
                    block["text"] = block.get("text", "") + delta["text"]
                elif delta["type"] == "input_json_delta":
                    block["json"] += delta["partial_json"]
            elif event["type"] == "message_delta":
                stop_reason = event["delta"].get("stop_reason") or stop_reason
        content = list(blocks.values())
        uses = [b for b in content if b["type"] == "tool_use"]
        # cut by max_tokens, the last call's input is partial
        for block in uses if stop_reason == "tool_use" else uses[:-1]:
            try:
                block["input"] = strict_json(block["json"] or "{}")
            except ValueError:
                print(f"  broken: input {block['json']!r:.200}", file=sys.stderr)
                return False
    else:
        response = await http.post("/v1/messages", json=body)
        if response.status_code != 200:
            return False
        message = response.json()
        content, stop_reason = message["content"], message["stop_reason"]
    uses = [b for b in content if b["type"] == "tool_use"]
    texts = [b for b in content if b["type"] == "text" and b.get("text")]
    ok = stop_reason in ("tool_use", "max_tokens") and bool(uses) and not texts
    if not ok:
        print(f"  broken: stop_reason={stop_reason} content={content!r:.200}", file=sys.stderr)
    return ok


async def rate(http: httpx.AsyncClient, seeds: int,
               one: Callable[[int], Awaitable[bool]], clients: int = 4) -> int:
    """How many of ``seeds`` requests broke the promise."""
    broken = 0
    todo = iter(range(seeds))

    async def client() -> None:
        nonlocal broken
        for seed in todo:
            ok = await one(seed)  # awaited before the sum is read: no count lost
            broken += not ok

    await asyncio.gather(*(client() for _ in range(clients)))
    return broken


async def run(url: str, seeds: int, only: str = "") -> None:
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        cases: list[tuple[str, Callable[[int], Awaitable[bool]]]] = []
        for name, schema, prompt in SCHEMAS:
            for stream in (False, True):
                cases.append((f"json_schema {name} {'stream' if stream else 'whole'}",
                              lambda s, st=stream, sc=schema, p=prompt:
                              json_answer(http, s, st, sc, p)))
        for stream in (False, True):
            cases.append((f"json_object {'stream' if stream else 'whole'}",
                          lambda s, st=stream: json_answer(http, s, st, None, SCHEMAS[0][2])))
        named = {"type": "function", "function": {"name": "save_note"}}
        for stream in (False, True):
            how = "stream" if stream else "whole"
            cases += [
                (f"tool_choice required {how}",
                 lambda s, st=stream: forced_call(http, s, st, "required")),
                (f"tool_choice named {how}",
                 lambda s, st=stream: forced_call(http, s, st, named)),
                (f"forced call cut by max_tokens=12 {how}",
                 lambda s, st=stream: forced_call(http, s, st, "required", max_tokens=12)),
                (f"anthropic any {how}",
                 lambda s, st=stream: anthropic_call(http, s, st, {"type": "any"})),
                (f"anthropic tool {how}",
                 lambda s, st=stream: anthropic_call(http, s, st,
                                                     {"type": "tool", "name": "save_note"})),
            ]
        cases.append(("response_format + forced tool whole",
                      lambda s: forced_call(http, s, False, named, extra={
                          "response_format": {"type": "json_schema", "json_schema": {
                              "name": "out", "schema": POEM}}})))
        for name, one in cases:
            if only and only not in name:
                continue
            broken = await rate(http, seeds, one)
            print(f"{name:<42} {broken:>3} of {seeds} broken", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--url", help="a running inferd serving the bundled model")
    parser.add_argument("--only", default="", help="run the cases whose name holds this")
    opts = parser.parse_args()
    if opts.url:
        asyncio.run(run(opts.url, opts.seeds, opts.only))
        return
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_inferd(Path(tmp), [], timeout=300)
        try:
            asyncio.run(run(url, opts.seeds, opts.only))
        finally:
            stop(proc)


if __name__ == "__main__":
    main()
