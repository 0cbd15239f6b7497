"""What real clients send beyond the basics: token-id prompts and inputs, ``echo``,
``dimensions``, CORS preflights, and 404s that say what exists."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from inferd.settings import bundled_gguf_path, bundled_minilm_path
from tests.helpers import InferdProcess

CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_embedding_input_as_token_ids(client: OpenAI, token_id_server: InferdProcess) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bundled_minilm_path(), local_files_only=True)
    texts = ["the cat sat on the mat", "stock markets fell sharply"]
    ids = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    # The model's setting ``token_id_input``: off by default, ids are refused by name.
    for given in (ids, ids[0]):
        with pytest.raises(openai.BadRequestError) as refused:
            client.embeddings.create(model=EMBED, input=given)
        body = refused.value.body
        assert isinstance(body, dict) and body["param"] == "input"
        assert body["code"] == "token_ids_not_accepted"
        assert "input[0]" in body["message"]
        assert "check_embedding_ctx_length=False" in body["message"]
    client = OpenAI(base_url=token_id_server.url + "/v1", api_key="unused", max_retries=0)
    by_text = client.embeddings.create(model=EMBED, input=texts).data
    by_ids = client.embeddings.create(model=EMBED, input=ids).data
    one = client.embeddings.create(model=EMBED, input=ids[0]).data
    assert len(by_ids) == 2 and len(one) == 1
    for text_vector, id_vector in zip(by_text, by_ids, strict=True):
        assert cosine(text_vector.embedding, id_vector.embedding) > 0.9999
    assert cosine(one[0].embedding, by_text[0].embedding) > 0.9999
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=EMBED, input=[[10**9]])
    assert info.value.body["param"] == "input"  # type: ignore[index]


def test_completion_prompt_as_token_ids(client: OpenAI) -> None:
    from llama_cpp import Llama

    vocab = Llama(model_path=bundled_gguf_path(), vocab_only=True, verbose=False)
    prompt = "1, 2, 3, 4,"
    ids = vocab.tokenize(prompt.encode(), add_bos=True, special=False)
    by_text = client.completions.create(model=CHAT, prompt=prompt, max_tokens=6, temperature=0)
    by_ids = client.completions.create(model=CHAT, prompt=ids, max_tokens=6, temperature=0)
    batch = client.completions.create(model=CHAT, prompt=[ids, ids], max_tokens=6,
                                      temperature=0)
    assert by_ids.choices[0].text == by_text.choices[0].text
    assert [c.text for c in batch.choices] == [by_text.choices[0].text] * 2
    assert by_ids.usage is not None and by_ids.usage.prompt_tokens == len(ids)


def test_echo_prepends_the_prompt(client: OpenAI) -> None:
    plain = client.completions.create(model=CHAT, prompt="Once upon a time", max_tokens=5,
                                      temperature=0)
    echoed = client.completions.create(model=CHAT, prompt="Once upon a time", max_tokens=5,
                                       temperature=0, echo=True)
    assert echoed.choices[0].text == "Once upon a time" + plain.choices[0].text
    streamed = client.completions.create(model=CHAT, prompt="Once upon a time", max_tokens=5,
                                         temperature=0, echo=True, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == echoed.choices[0].text


def test_dimensions_other_than_the_model_s_are_refused(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=EMBED, input="x", dimensions=64)
    assert info.value.body["param"] == "dimensions"  # type: ignore[index]
    assert len(client.embeddings.create(model=EMBED, input="x",
                                        dimensions=384).data[0].embedding) == 384


def test_404_names_what_exists(http: httpx.Client) -> None:
    root = http.post("/embeddings", json={"model": EMBED, "input": "x"})
    assert root.status_code == 404
    assert "/v1/embeddings" in root.json()["error"]["message"]
    assistants = http.get("/v1/assistants")
    assert assistants.status_code == 404
    assert "not supported by this server" in assistants.json()["error"]["message"]
    typo = http.post("/v1/chat/completion", json={})
    assert "/v1/chat/completions" in typo.json()["error"]["message"]
    # CORS is off by default: a preflight gets no CORS headers
    preflight = http.options("/v1/models", headers={"Origin": "https://app.example",
                                                    "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in preflight.headers


@pytest.fixture(scope="module")
def cors_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferdProcess]:
    env = {"INFERD_MODELS": json.dumps([{"name": "echo", "kind": "echo"}]),
           "INFERD_CORS_ORIGINS": json.dumps(["https://app.example"]),
           "INFERD_ADMIN_KEY": "sk-test-admin-cors-0123456789abcdef"}
    with InferdProcess(Path(tmp_path_factory.mktemp("cors")), "--no-bundled",
                       env=env) as proc:
        yield proc


def test_cors_preflight_and_answer(cors_server: InferdProcess) -> None:
    url = cors_server.url + "/v1/chat/completions"
    preflight = httpx.options(url, headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status_code == 200  # answered before auth asks for a key
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    other = httpx.options(url, headers={"Origin": "https://evil.example",
                                        "Access-Control-Request-Method": "POST"})
    assert other.status_code == 400
    answer = httpx.post(url, headers={
        "Origin": "https://app.example",
        "Authorization": "Bearer sk-test-admin-cors-0123456789abcdef"},
        json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == "https://app.example"
