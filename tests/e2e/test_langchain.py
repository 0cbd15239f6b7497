"""LangChain's OpenAI integration (``langchain-openai``) against the bundled models, unchanged:
``ChatOpenAI`` (invoke, stream, tool binding) and ``OpenAIEmbeddings``, whose default client
tokenizes the texts itself and sends token-id arrays."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import tiktoken
import tiktoken.model
import tiktoken.registry
from langchain_core.messages import AIMessageChunk, BaseMessageChunk
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from openai import OpenAI
from pydantic import BaseModel, Field

from inferd.settings import bundled_minilm_path
from tests.helpers import InferdProcess

CHAT_MODEL = "smollm2-135m-instruct"
EMBED_MODEL = "all-minilm-l6-v2"
TEXTS = ["the cat sat on the mat", "paris is the capital of france"]


class GetWeather(BaseModel):
    """The current weather of a city."""

    city: str = Field(description="The city")


@pytest.fixture(scope="module")
def chat(inferd_server: InferdProcess) -> ChatOpenAI:
    return ChatOpenAI(model=CHAT_MODEL, base_url=inferd_server.url + "/v1", api_key="unused",
                      temperature=0, max_tokens=24, max_retries=0, timeout=120)


def test_invoke_is_the_answer_the_openai_sdk_gets(chat: ChatOpenAI, client: OpenAI) -> None:
    answer = chat.invoke("Name a colour.")
    assert isinstance(answer.content, str) and answer.content
    direct = client.chat.completions.create(
        model=CHAT_MODEL, temperature=0, max_tokens=24,
        messages=[{"role": "user", "content": "Name a colour."}])
    assert answer.content == direct.choices[0].message.content
    assert answer.usage_metadata is not None
    assert answer.usage_metadata["input_tokens"] == direct.usage.prompt_tokens  # type: ignore[union-attr]


def test_stream_adds_up_to_the_invoked_answer(chat: ChatOpenAI) -> None:
    chunks = list(chat.stream("Name a colour.", stream_usage=True))  # include_usage
    assert len(chunks) > 2
    whole: BaseMessageChunk = chunks[0]
    for chunk in chunks[1:]:
        whole = whole + chunk
    assert whole.content == chat.invoke("Name a colour.").content
    assert isinstance(whole, AIMessageChunk) and whole.usage_metadata is not None
    assert whole.usage_metadata["output_tokens"] > 0


def test_bound_tools_come_back_as_tool_calls(chat: ChatOpenAI) -> None:
    with_tools = chat.bind_tools([GetWeather], tool_choice="GetWeather", max_tokens=120)
    message = with_tools.invoke("What is the weather in Paris?")
    [call] = message.tool_calls  # type: ignore[attr-defined]
    assert call["name"] == "GetWeather" and isinstance(call["args"]["city"], str)
    assert call["id"]
    streamed: Any = None
    for chunk in with_tools.stream("What is the weather in Paris?"):
        streamed = chunk if streamed is None else streamed + chunk
    assert [c["name"] for c in streamed.tool_calls] == ["GetWeather"]
    assert streamed.tool_calls[0]["args"] == call["args"]  # greedy: the same call


def _embeddings(server: InferdProcess, **options: Any) -> tuple[OpenAIEmbeddings, list[Any]]:
    """The LangChain client, and the JSON bodies it sends."""
    sent: list[Any] = []

    def record(request: httpx.Request) -> None:
        sent.append(json.loads(request.content))

    client = httpx.Client(event_hooks={"request": [record]}, timeout=120)
    return OpenAIEmbeddings(model=EMBED_MODEL, base_url=server.url + "/v1", api_key="unused",
                            max_retries=0, http_client=client, **options), sent


def _reference(client: OpenAI) -> np.ndarray:
    result = client.embeddings.create(model=EMBED_MODEL, input=TEXTS)
    return np.array([d.embedding for d in result.data])


def test_embeddings_of_texts(inferd_server: InferdProcess, client: OpenAI) -> None:
    embeddings, sent = _embeddings(inferd_server, check_embedding_ctx_length=False)
    vectors = np.array(embeddings.embed_documents(TEXTS))
    assert vectors.shape == (2, 384)
    assert np.allclose(vectors, _reference(client), atol=1e-6)
    assert sent[-1]["input"] == TEXTS
    assert np.allclose(embeddings.embed_query(TEXTS[0]), vectors[0], atol=1e-6)


@pytest.fixture
def model_tokenizer(monkeypatch: pytest.MonkeyPatch) -> None:
    """tiktoken tokenizes with the embedding model's own vocabulary (OpenAI's encodings are
    downloaded at run time, which cannot happen here): the whole words of MiniLM's WordPiece
    vocabulary, each with its id."""
    vocabulary = (Path(bundled_minilm_path()) / "vocab.txt").read_text().splitlines()
    ranks = {word.encode(): index for index, word in enumerate(vocabulary)
             if word and not word.startswith(("##", "[")) and word.isalnum()}
    encoding = tiktoken.Encoding("minilm-words", pat_str=r"[a-z]+|[0-9]+",
                                 mergeable_ranks=ranks, special_tokens={})
    monkeypatch.setitem(tiktoken.registry.ENCODINGS, "minilm-words", encoding)
    monkeypatch.setitem(tiktoken.model.MODEL_TO_ENCODING, EMBED_MODEL, "minilm-words")


def test_default_token_id_arrays_are_refused_with_the_setting_to_change(
        inferd_server: InferdProcess, model_tokenizer: None) -> None:
    embeddings, sent = _embeddings(inferd_server)  # LangChain's defaults: it tokenizes
    with pytest.raises(openai.BadRequestError) as info:
        embeddings.embed_documents(TEXTS)
    assert all(isinstance(i, int) for ids in sent[-1]["input"] for i in ids)
    error = info.value.body
    assert isinstance(error, dict) and error["param"] == "input"
    assert "check_embedding_ctx_length=False" in error["message"]
    with pytest.raises(openai.BadRequestError):
        embeddings.embed_query(TEXTS[0])
    fixed, _ = _embeddings(inferd_server, check_embedding_ctx_length=False)
    assert len(fixed.embed_query(TEXTS[0])) == 384


def test_embeddings_sent_as_token_id_arrays(token_id_server: InferdProcess, client: OpenAI,
                                            model_tokenizer: None) -> None:
    """A model set to read ids of its own tokenizer (``token_id_input``), and a tokenizer
    that gives them: LangChain's defaults work."""
    embeddings, sent = _embeddings(token_id_server)  # LangChain's defaults: it tokenizes
    vectors = np.array(embeddings.embed_documents(TEXTS))
    arrays = sent[-1]["input"]
    assert len(arrays) == 2 and all(isinstance(i, int) for ids in arrays for i in ids)
    assert len(arrays[0]) == len(TEXTS[0].split())
    # the ids are the model's own: the same vectors as the texts
    assert np.allclose(vectors, _reference(client), atol=1e-5)
