"""Tools through an ``http`` replica: the gateway passes them to an upstream inferd that runs
the bundled model, and the upstream's streamed tool-call deltas reach the client intact."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_http_replicas import NO_AUTH, client, gateway
from tests.e2e.test_tool_calls import ASK, CHAT_MODEL, WEATHER
from tests.helpers import InferdProcess


@pytest.fixture
def upstream_and_gateway(tmp_path: Path) -> Iterator[tuple[InferdProcess, InferdProcess]]:
    with InferdProcess(tmp_path / "up", env=NO_AUTH) as up, gateway(tmp_path, [
            {"kind": "http", "url": up.url + "/v1", "upstream_model": CHAT_MODEL}]) as gw:
        yield up, gw


def _deltas(server: InferdProcess, model: str) -> tuple[list[dict[str, Any]], str | None]:
    deltas: list[dict[str, Any]] = []
    finish = None
    for chunk in client(server).chat.completions.create(
            model=model, messages=ASK, tools=[WEATHER], tool_choice="required",  # type: ignore[list-item]
            parallel_tool_calls=False, temperature=0, max_tokens=60, stream=True):
        for choice in chunk.choices:
            deltas += [d.model_dump(exclude={"id"}) for d in choice.delta.tool_calls or []]
            finish = choice.finish_reason or finish
    return deltas, finish


def test_streamed_tool_calls_pass_through_intact(
        upstream_and_gateway: tuple[InferdProcess, InferdProcess]) -> None:
    up, gw = upstream_and_gateway
    direct, direct_finish = _deltas(up, CHAT_MODEL)
    proxied, proxied_finish = _deltas(gw, "chat")
    assert direct_finish == proxied_finish == "tool_calls"
    assert proxied == direct  # every delta, in the same pieces (ids differ per request)
    assert proxied[0]["function"]["name"] == "get_weather"
    arguments = "".join(d["function"]["arguments"] for d in proxied)
    assert "city" in json.loads(arguments)
    whole = client(gw).chat.completions.create(
        model="chat", messages=ASK, tools=[WEATHER], tool_choice="required",  # type: ignore[list-item]
        parallel_tool_calls=False, temperature=0, max_tokens=60)
    assert whole.choices[0].finish_reason == "tool_calls"
    calls = whole.choices[0].message.tool_calls or []
    assert json.loads(calls[0].function.arguments) == json.loads(arguments)  # type: ignore[union-attr]
