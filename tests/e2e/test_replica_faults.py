"""Upstream replica faults, injected on the wire by a fake OpenAI-compatible upstream
(``tests/fault_upstream.py``) behind an ``inferd serve`` gateway: slow, hanging mid-stream,
closing mid-stream, non-JSON and truncated bodies, refused connections, flapping.

The openai SDK is the client (its own retries off, so that every failure shows); raw SSE is
read with httpx where the exact events matter.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.fault_upstream import WORDS_BEFORE_FAULT, FaultUpstream
from tests.helpers import InferdProcess, free_port, wait_for

COOLDOWN_BASE, COOLDOWN_MAX = 0.5, 4.0
WORDS = "w0 w1 w2 w3 w4 w5"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultUpstream]:
    with FaultUpstream() as up:
        yield up


@pytest.fixture(scope="module")
def refused_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FaultUpstream,
            refused_url: str) -> Iterator[InferdProcess]:
    def replica(fault: str, **extra: Any) -> dict[str, Any]:
        url = refused_url if fault == "refused" else upstream.url(fault)
        return {"kind": "http", "url": url, "upstream_model": "fake", **extra}

    first = {"weight": 100}  # tried first while it is available
    models = {
        "slow": [replica("slow", timeout=1, **first), replica("ok")],
        "slow-only": [replica("slow", timeout=1)],
        "hang": [replica("hang", timeout=1)],
        "cut": [replica("cut")],
        "garbage": [replica("garbage")],
        "halfjson": [replica("halfjson")],
        "truncated": [replica("truncated")],
        "garbage-then-ok": [replica("garbage", **first), replica("ok")],
        "refused": [replica("refused", **first), replica("ok")],
        "flappy": [replica("flap")],
    }
    tmp = tmp_path_factory.mktemp("faults")
    config = tmp / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "bundled_models": False, "health_check_interval": 0.3,
        "replica_cooldown_base": COOLDOWN_BASE, "replica_cooldown_max": COOLDOWN_MAX,
        "log_format": "text",
        "remote_models": [{"name": name, "replicas": replicas}
                          for name, replicas in models.items()]}))
    with InferdProcess(tmp / "gw", "--config", str(config), "--no-bundled",
                       env={"INFERD_AUTH": "off"}) as server:
        yield server


def sdk(server: InferdProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0,
                         timeout=60)


def ask(model: str, text: str = WORDS) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


def replica(server: InferdProcess, model: str, url: str) -> dict[str, Any]:
    states = httpx.get(server.url + "/admin/v1/replicas", timeout=30).json()["data"]
    [state] = [r for r in states if r["model"] == model and r["url"].startswith(url)]
    return state


def usage_of(server: InferdProcess, model: str) -> list[dict[str, Any]]:
    records = httpx.get(server.url + "/admin/v1/usage/records", params={"limit": 1000},
                        timeout=30).json()["data"]
    return [r for r in records if r["model"] == model]


def sse_events(server: InferdProcess, body: dict[str, Any]) -> list[Any]:
    """The ``data:`` payloads of a streamed answer (``[DONE]`` as the string)."""
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body,
                      timeout=60) as response:
        assert response.status_code == 200
        return [line[6:] if line == "data: [DONE]" else json.loads(line[6:])
                for line in response.iter_lines() if line.startswith("data: ")]


def streamed_text(events: list[Any]) -> str:
    return "".join(e["choices"][0]["delta"].get("content") or "" for e in events
                   if isinstance(e, dict) and e.get("choices"))


# -- slow ----------------------------------------------------------------------------------------
def test_a_slow_replica_times_out_and_the_next_one_answers(
        gateway: InferdProcess, upstream: FaultUpstream) -> None:
    before = upstream.seen["slow"]
    answer = sdk(gateway).chat.completions.create(**ask("slow"))
    assert answer.choices[0].message.content == WORDS
    assert upstream.seen["slow"] == before + 1  # it was tried first, and given up on
    state = replica(gateway, "slow", upstream.url("slow"))
    assert "timed out" in state["last_error"] and state["errors"] == 1

    # a stream that has sent nothing yet fails over the same way
    wait_for(lambda: replica(gateway, "slow", upstream.url("slow"))["available"],
             what="the slow replica back in rotation")
    chunks = list(sdk(gateway).chat.completions.create(**ask("slow"), stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == WORDS
    assert upstream.seen["slow"] == before + 2
    assert replica(gateway, "slow", upstream.url("slow"))["errors"] == 2


def test_a_slow_replica_alone_gives_504(gateway: InferdProcess) -> None:
    with pytest.raises(openai.APIStatusError) as failed:
        sdk(gateway).chat.completions.create(**ask("slow-only"))
    assert failed.value.status_code == 504
    assert "timed out" in failed.value.message


# -- mid-stream ----------------------------------------------------------------------------------
def test_a_stream_that_hangs_ends_with_an_error_event_after_the_timeout(
        gateway: InferdProcess) -> None:
    events = sse_events(gateway, {**ask("hang"), "stream": True})
    assert events[-1] == "[DONE]"
    error = events[-2]["error"]
    assert "stopped sending mid-stream" in error["message"] and error["code"] is not None
    sent = " ".join(WORDS.split()[:WORDS_BEFORE_FAULT])
    assert streamed_text(events[:-2]) == sent
    [record] = usage_of(gateway, "hang")
    assert record["status"] == 504 and record["stream"]
    assert record["completion_tokens"] == WORDS_BEFORE_FAULT  # what was sent is billed


def test_a_stream_cut_mid_way_gives_an_error_event_and_bills_what_was_sent(
        gateway: InferdProcess) -> None:
    text = ""
    with pytest.raises(openai.APIError) as broken:
        for chunk in sdk(gateway).chat.completions.create(**ask("cut"), stream=True):
            text += "".join(c.delta.content or "" for c in chunk.choices)
    assert "broke off the stream" in broken.value.message
    assert text == " ".join(WORDS.split()[:WORDS_BEFORE_FAULT])
    [record] = usage_of(gateway, "cut")
    assert record["status"] == 502 and record["error"]
    assert record["completion_tokens"] == WORDS_BEFORE_FAULT
    assert record["prompt_tokens"] > 0 and record["total_tokens"] == (
        record["prompt_tokens"] + WORDS_BEFORE_FAULT)


# -- bad bodies ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("model", "says"), [
    ("garbage", "answered with invalid JSON"),
    ("halfjson", "answered with invalid JSON"),
    ("truncated", "broke off its answer"),
])
def test_a_bad_body_gives_502_with_a_clear_error(gateway: InferdProcess, model: str,
                                                 says: str) -> None:
    response = httpx.post(gateway.url + "/v1/chat/completions", json=ask(model), timeout=60)
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert says in error["message"] and f"'{model}'" in error["message"]
    assert error["type"] and error["code"]


def test_a_bad_body_fails_over_to_the_next_replica(gateway: InferdProcess,
                                                   upstream: FaultUpstream) -> None:
    before = upstream.seen["garbage"]
    answer = sdk(gateway).chat.completions.create(**ask("garbage-then-ok"))
    assert answer.choices[0].message.content == WORDS
    assert upstream.seen["garbage"] == before + 1
    state = replica(gateway, "garbage-then-ok", upstream.url("garbage"))
    assert "invalid JSON" in state["last_error"] and state["healthy"] is False


# -- refused -------------------------------------------------------------------------------------
def test_a_replica_refusing_connections_is_failed_over(gateway: InferdProcess,
                                                       refused_url: str) -> None:
    api = sdk(gateway)
    assert api.chat.completions.create(**ask("refused")).choices[0].message.content == WORDS
    chunks = list(api.chat.completions.create(**ask("refused"), stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == WORDS
    state = replica(gateway, "refused", refused_url)
    assert state["healthy"] is False
    assert "could not be reached" in state["last_error"] or "failed" in state["last_error"]


# -- flapping ------------------------------------------------------------------------------------
def _fail_once(gateway: InferdProcess, upstream: FaultUpstream) -> dict[str, Any]:
    """Wait until the replica is tried again, send a request that fails there; returns the
    replica's state after it."""

    def tried() -> dict[str, Any] | None:
        wait_for(lambda: replica(gateway, "flappy", upstream.url("flap"))["cooled_down_until"]
                 is None, what="the cooldown over")
        response = httpx.post(gateway.url + "/v1/chat/completions", json=ask("flappy"),
                              timeout=60)
        if response.status_code == 503:  # a failed health check cooled it down just before
            return None
        assert response.status_code == 502, response.text
        assert "answered 503" in response.json()["error"]["message"]
        return replica(gateway, "flappy", upstream.url("flap"))

    return wait_for(tried, what="a request that reached the replica")


def backoff(failures: int) -> float:
    return min(COOLDOWN_MAX, COOLDOWN_BASE * 2 ** (failures - 1))


def test_a_flapping_replica_cools_down_longer_each_time_and_recovers(
        gateway: InferdProcess, upstream: FaultUpstream) -> None:
    upstream.down = True
    try:
        states = [_fail_once(gateway, upstream) for _ in range(4)]
    finally:
        upstream.down = False
    failures = [s["consecutive_failures"] for s in states]
    # each failed request counts one more failure (a health check may have counted the first)
    assert failures[0] in (1, 2) and failures == list(range(failures[0], failures[0] + 4))
    assert not any(s["healthy"] for s in states)
    # the cooldown doubles with each failure, up to the maximum
    cooldowns = [s["cooldown_seconds"] for s in states]
    assert cooldowns == [backoff(f) for f in failures]
    assert cooldowns[0] < cooldowns[1] < cooldowns[2] and cooldowns[-1] == COOLDOWN_MAX
    wait_for(lambda: replica(gateway, "flappy", upstream.url("flap"))["healthy"],
             what="the replica healthy again (its health check answers)")
    answer = sdk(gateway).chat.completions.create(**ask("flappy"))
    assert answer.choices[0].message.content == WORDS
    assert replica(gateway, "flappy", upstream.url("flap"))["consecutive_failures"] == 0

    upstream.down = True  # down again: the backoff starts over from its base
    try:
        state = _fail_once(gateway, upstream)
    finally:
        upstream.down = False
    assert state["consecutive_failures"] in (1, 2)
    assert state["cooldown_seconds"] == backoff(state["consecutive_failures"]) < COOLDOWN_MAX
