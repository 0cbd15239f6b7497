"""End to end with the bundled models: the OpenAI Batch API through the official SDK, and the
APIs of the replaced systems (contexts and results, queued generate, model host) with their
documents' own examples."""

from __future__ import annotations

import io
import json
import uuid

import httpx
import openai
import pytest
from openai import OpenAI

from tests.helpers import wait_for

CHAT_MODEL = "smollm2-135m-instruct"
EMBED_MODEL = "all-minilm-l6-v2"




def line(custom_id: str, body: dict[str, object], url: str = "/v1/chat/completions") -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


def upload(client: OpenAI, text: str) -> str:
    return client.files.create(file=("input.jsonl", io.BytesIO(text.encode())),
                               purpose="batch").id


def test_batch_flow_with_the_openai_sdk(client: OpenAI) -> None:
    chat = {"model": CHAT_MODEL, "max_tokens": 6, "temperature": 0,
            "messages": [{"role": "user", "content": "Say hi."}]}
    text = "\n".join([line("a", chat), "{not json", line("b", {**chat, "messages": []}),
                      line("c", chat, url="/v1/embeddings"), line("d", chat)])
    file_id = upload(client, text)
    assert client.files.retrieve(file_id).purpose == "batch"
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                  completion_window="24h", metadata={"run": "e2e"})
    assert batch.status == "in_progress" and batch.request_counts
    assert batch.request_counts.total == 5
    batch = wait_for(lambda: (b := client.batches.retrieve(batch.id)).status in (
        "completed", "failed", "cancelled", "expired") and b, within=120, what="the batch")
    assert batch.status == "completed" and batch.metadata == {"run": "e2e"}
    counts = batch.request_counts
    assert counts is not None and (counts.total, counts.completed, counts.failed) == (5, 2, 3)
    assert batch.output_file_id and batch.error_file_id
    output = [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
    assert sorted(o["custom_id"] for o in output) == ["a", "d"]
    for item in output:
        assert item["error"] is None and item["response"]["status_code"] == 200
        assert item["response"]["body"]["object"] == "chat.completion"
    errors = {e["custom_id"]: e for e in
              (json.loads(x) for x in client.files.content(batch.error_file_id).text.splitlines())}
    assert set(errors) == {None, "b", "c"}
    assert errors[None]["error"]["code"] and errors[None]["response"] is None
    assert errors["b"]["response"]["status_code"] == 400
    assert "url" in errors["c"]["error"]["message"]
    assert batch.id in [b.id for b in client.batches.list()]
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)


def finished(client: OpenAI, batch_id: str) -> openai.types.Batch:
    batch: openai.types.Batch = wait_for(
        lambda: (b := client.batches.retrieve(batch_id)).status in (
            "completed", "failed", "cancelled", "expired") and b, within=180, what="the batch")
    return batch


def lines_of(client: OpenAI, file_id: str | None) -> dict[str, dict[str, object]]:
    assert file_id is not None
    return {item["custom_id"]: item for item in
            (json.loads(x) for x in client.files.content(file_id).text.splitlines())}


def test_batches_of_responses_and_of_messages_answer_in_their_own_shapes(
        client: OpenAI) -> None:
    response = {"model": CHAT_MODEL, "input": "Say hi.", "max_output_tokens": 6,
                "temperature": 0}
    text = "\n".join([
        line("r1", response, url="/v1/responses"),
        line("r2", {**response, "instructions": "Answer in French."}, url="/v1/responses"),
        line("bad", {**response, "input": []}, url="/v1/responses"),
        line("wrong-url", response)])
    batch = client.batches.create(input_file_id=upload(client, text), endpoint="/v1/responses",
                                  completion_window="24h")
    batch = finished(client, batch.id)
    counts = batch.request_counts
    assert counts is not None and (counts.total, counts.completed, counts.failed) == (4, 2, 2)
    output = lines_of(client, batch.output_file_id)
    assert sorted(output) == ["r1", "r2"]
    for item in output.values():
        body = item["response"]["body"]  # type: ignore[index]
        assert body["object"] == "response" and body["status"] in ("completed", "incomplete")
        assert body["output"][0]["type"] == "message" and body["usage"]["output_tokens"] >= 1
    errors = lines_of(client, batch.error_file_id)
    assert errors["bad"]["response"]["status_code"] == 400  # type: ignore[index]
    assert "url" in errors["wrong-url"]["error"]["message"]  # type: ignore[index]

    message = {"model": CHAT_MODEL, "max_tokens": 6, "temperature": 0,
               "messages": [{"role": "user", "content": "Say hi."}]}
    text = "\n".join([line("m1", message, url="/v1/messages"),
                      line("m2", {**message, "system": "Be brief."}, url="/v1/messages"),
                      line("no-max", {**message, "max_tokens": None}, url="/v1/messages")])
    batch = client.batches.create(input_file_id=upload(client, text),
                                  endpoint="/v1/messages",  # type: ignore[arg-type]
                                  completion_window="24h")
    batch = finished(client, batch.id)
    counts = batch.request_counts
    assert counts is not None and (counts.total, counts.completed, counts.failed) == (3, 2, 1)
    output = lines_of(client, batch.output_file_id)
    assert sorted(output) == ["m1", "m2"]
    for item in output.values():
        body = item["response"]["body"]  # type: ignore[index]
        assert body["type"] == "message" and body["role"] == "assistant"
        assert body["content"][0]["type"] == "text" and body["usage"]["output_tokens"] >= 1
    errors = lines_of(client, batch.error_file_id)
    assert errors["no-max"]["response"]["status_code"] == 400  # type: ignore[index]


def test_cancelling_a_batch_accounts_for_every_request(client: OpenAI) -> None:
    body = {"model": CHAT_MODEL, "max_tokens": 40,
            "messages": [{"role": "user", "content": "Count to twenty."}]}
    file_id = upload(client, "\n".join(line(f"r{i}", body) for i in range(6)))
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    batch = client.batches.cancel(batch.id)
    assert batch.status in ("cancelling", "cancelled")
    if batch.status == "cancelling":
        batch = wait_for(lambda: (b := client.batches.retrieve(batch.id)).status != "cancelling"
                         and b, within=120, what="the batch's cancellation")
    counts = batch.request_counts
    assert batch.status == "cancelled" and counts is not None
    assert counts.completed + counts.failed == counts.total == 6 and counts.failed >= 1


def test_bad_batch_files_are_refused_and_nothing_is_half_created(client: OpenAI,
                                                                 http: httpx.Client) -> None:
    with pytest.raises(openai.BadRequestError, match="JSONL"):
        upload(client, "this is not json\nnor this")
    with pytest.raises(openai.BadRequestError, match="UTF-8"):
        client.files.create(file=("x.jsonl", io.BytesIO(b"\xff\xfe\x00")), purpose="batch")
    before = len(client.batches.list().data)
    unknown = upload(client, line("x", {"model": "no-such-model", "messages": []}))
    with pytest.raises(openai.BadRequestError, match="no-such-model"):
        client.batches.create(input_file_id=unknown, endpoint="/v1/chat/completions",
                              completion_window="24h")
    assert len(client.batches.list().data) == before
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file_missing", endpoint="/v1/chat/completions",
                              completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_missing")
    with pytest.raises(openai.NotFoundError):
        client.files.content("file_missing")
    big = http.post("/v1/files", files={"file": ("big.jsonl", b"x" * 2048)},
                    data={"purpose": "fine-tune"})
    assert big.status_code == 400 and big.json()["error"]["param"] == "purpose"


def test_contexts_and_results(http: httpx.Client) -> None:
    context = http.post("/contexts/", json={"content": "Name a colour."}).json()
    assert context["content"] == "Name a colour." and isinstance(context["id"], int)
    assert context in http.get("/contexts/").json()
    assert http.get(f"/contexts/{context['id']}").json() == context
    assert http.get("/contexts/999999").status_code == 404
    models = http.get("/models/").json()
    assert {"name": CHAT_MODEL, "version": "1", "state": "READY"} in models
    sent = http.post(f"/models/send/{CHAT_MODEL}/{context['id']}")
    assert sent.status_code == 202 and sent.json()["status"] == "pending"
    result_id = sent.json()["result_id"]
    assert http.post(f"/models/send/no-such-model/{context['id']}").status_code == 404
    result = wait_for(lambda: (r := http.get(f"/results/{result_id}").json())["status"]
                      != "pending" and r, within=120, what="the result")
    assert result["status"] == "completed" and result["content"]
    assert result["context_id"] == context["id"]
    assert result_id in [r["id"] for r in http.get("/results/").json()]
    assert http.get("/results/nope").status_code == 404


def test_queued_generate_and_chat_completion_as_documented(http: httpx.Client) -> None:
    job_id = uuid.uuid4().hex
    body = {"job_id": job_id, "meta": {"temperature": 0.5, "tokens_limit": 20,
                                       "stop_words": ["stop"], "model": "gpt-model"},
            "content": "What is AI?"}
    first = http.post("/generate", json=body)
    assert first.status_code == 200 and set(first.json()) == {"content"}
    assert first.json()["content"]
    again = http.post("/generate", json=body)  # the same job: the same answer
    assert again.json() == first.json()
    assert http.post("/generate", json={**body, "content": "Other"}).status_code == 409
    chat = http.post("/chat_completion", json={
        "job_id": uuid.uuid4().hex,
        "meta": {"temperature": 0.5, "tokens_limit": 1000, "stop_words": ["stop"],
                 "model": "gpt-model"},
        "messages": [{"role": "user", "content": "What is AI?"},
                     {"role": "assistant", "content": "Artificial Intelligence is..."}]})
    assert chat.status_code == 200 and isinstance(chat.json()["content"], str)
    assert http.post("/generate", json={"meta": {}}).status_code == 400


def test_model_host_old_endpoints(http: httpx.Client) -> None:
    init = http.post("/old/initialize", json={"model": CHAT_MODEL, "temperature": 0,
                                              "max_new_tokens": 8})
    assert init.status_code == 200 and init.json()["model"] == CHAT_MODEL
    status = http.get("/old/status").json()
    assert status["status"] == "loaded" and status["params"] == {"temperature": 0,
                                                                 "max_tokens": 8}
    messages = [{"role": "user", "content": "Say hello."}]
    answer = http.post("/old/generate", json={"messages": messages}).json()
    assert answer["response"] and answer["usage"]["completion_tokens"] <= 8
    with http.stream("POST", "/old/stream", json={"messages": messages}) as response:
        pieces = list(response.iter_text())
    assert response.status_code == 200 and "".join(pieces) == answer["response"]
    missing = http.post("/old/initialize", json={"model": "not-a-model"})
    assert missing.status_code == 404
    assert http.post("/old/generate", json={"messages": []}).status_code == 400
