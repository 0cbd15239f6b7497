"""The Responses API through the official ``openai`` SDK against the bundled model: the SDK's
typed parsers judge the objects and the stream events."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types.responses import Response
from pydantic import BaseModel

MODEL = "smollm2-135m-instruct"


def wait_done(client: OpenAI, response_id: str) -> Any:
    deadline = time.monotonic() + 180
    response = client.responses.retrieve(response_id)
    while response.status in ("queued", "in_progress") and time.monotonic() < deadline:
        time.sleep(0.2)
        response = client.responses.retrieve(response_id)
    return response


def test_create_retrieve_input_items_delete(client: OpenAI) -> None:
    response = client.responses.create(model=MODEL, input="Say hello.",
                                       instructions="Answer briefly.", max_output_tokens=16,
                                       temperature=0)
    assert response.status in ("completed", "incomplete")
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.output_text
    assert response.usage is not None and response.usage.output_tokens > 0
    assert response.usage.total_tokens == (response.usage.input_tokens
                                           + response.usage.output_tokens)
    again = client.responses.retrieve(response.id)
    assert again.output_text == response.output_text
    items = client.responses.input_items.list(response.id)
    assert [i.type for i in items.data] == ["message"]
    assert items.data[0].content[0].text == "Say hello."  # type: ignore[union-attr]
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_store_false_keeps_nothing(client: OpenAI) -> None:
    response = client.responses.create(model=MODEL, input="Hi", max_output_tokens=4,
                                       store=False)
    assert response.output_text is not None
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_previous_response_id_continues_the_conversation(client: OpenAI) -> None:
    first = client.responses.create(model=MODEL, input="My name is Ada.", max_output_tokens=8,
                                    temperature=0)
    second = client.responses.create(model=MODEL, input="What is my name?",
                                     previous_response_id=first.id, max_output_tokens=8,
                                     temperature=0)
    assert second.previous_response_id == first.id
    # the conversation the model saw holds the first turn: more input tokens than alone
    alone = client.responses.create(model=MODEL, input="What is my name?",
                                    max_output_tokens=8, temperature=0, store=False)
    assert second.usage is not None and alone.usage is not None
    assert second.usage.input_tokens > alone.usage.input_tokens
    # the next turn starts with the first turn's prompt, which the engine keeps in its cache
    assert 0 < second.usage.input_tokens_details.cached_tokens < second.usage.input_tokens


def test_stream_event_sequence(client: OpenAI) -> None:
    with client.responses.stream(model=MODEL, input="Count to three.",
                                 max_output_tokens=12, temperature=0) as stream:
        events = list(stream)
    # the SDK's get_final_response() wants response.completed; a cut-off answer ends with
    # response.incomplete, which carries the same final object
    final = events[-1].response  # type: ignore[union-attr]
    types = [e.type for e in events]
    assert types[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert "response.output_text.delta" in types
    assert types[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", types[-1]]
    assert types[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text and deltas
    assert client.responses.retrieve(final.id).output_text == deltas  # stored at the end


def test_input_tokens_counts_what_a_response_sends(client: OpenAI) -> None:
    question = {"model": MODEL, "input": "Say hello.", "instructions": "Answer briefly."}
    counted = client.responses.input_tokens.count(**question)  # type: ignore[arg-type]
    answered = client.responses.create(**question, max_output_tokens=4,  # type: ignore[arg-type]
                                       temperature=0, store=False)
    assert counted.object == "response.input_tokens"
    assert answered.usage is not None and counted.input_tokens == answered.usage.input_tokens
    first = client.responses.create(model=MODEL, input="My name is Ada.", max_output_tokens=4)
    following = client.responses.input_tokens.count(model=MODEL, input="Say hello.",
                                                     instructions="Answer briefly.",
                                                     previous_response_id=first.id)
    assert following.input_tokens > counted.input_tokens


def test_a_conversation_is_the_context_of_its_responses(client: OpenAI) -> None:
    conversation = client.conversations.create(items=[
        {"role": "user", "content": "My name is Ada."}])
    alone = client.responses.create(model=MODEL, input="What is my name?",
                                    max_output_tokens=8, temperature=0, store=False)
    within = client.responses.create(model=MODEL, input="What is my name?",
                                     conversation=conversation.id, max_output_tokens=8,
                                     temperature=0)
    assert within.usage is not None and alone.usage is not None
    assert within.usage.input_tokens > alone.usage.input_tokens
    items = client.conversations.items.list(conversation.id, order="asc").data
    assert [i.type for i in items] == ["message"] * 3
    assert items[-1].id == within.output[0].id


class City(BaseModel):
    name: str
    country: str


def test_parse_with_a_pydantic_model(client: OpenAI) -> None:
    parsed = client.responses.parse(model=MODEL, input="Name a city in France.",
                                    text_format=City, max_output_tokens=60, temperature=0)
    city = parsed.output_parsed
    assert isinstance(city, City)


def test_background_polled_and_streamed_from_a_sequence_number(client: OpenAI) -> None:
    created = client.responses.create(model=MODEL, input="Count from 1 to 20.",
                                      background=True, max_output_tokens=40, temperature=0)
    assert created.status == "queued" and created.background
    done = wait_done(client, created.id)
    assert done.status in ("completed", "incomplete") and done.output_text
    events = list(client.responses.retrieve(created.id, stream=True))
    numbers = [e.sequence_number for e in events]
    assert numbers == sorted(set(numbers)) and events[0].type == "response.created"
    assert numbers == list(range(len(events)))  # numbered from 0, as OpenAI numbers them
    assert events[-1].type in ("response.completed", "response.incomplete")
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == done.output_text
    middle = numbers[len(numbers) // 2]
    rest = list(client.responses.retrieve(created.id, stream=True, starting_after=middle))
    assert [e.sequence_number for e in rest] == [n for n in numbers if n > middle]


def test_a_finished_background_response_outlives_its_job(client: OpenAI,
                                                         http: httpx.Client) -> None:
    created = client.responses.create(model=MODEL, input="Say yes.", background=True,
                                      max_output_tokens=8, temperature=0)
    jobs = http.get("/v1/jobs", params={"limit": 100}).json()["data"]
    job_id = next(j["id"] for j in jobs if j["endpoint"] == "/v1/responses"
                  and j["request"]["response"]["id"] == created.id)
    deadline = time.monotonic() + 180  # followed through the job only, not the response
    job = http.get(f"/v1/jobs/{job_id}").json()
    while job["status"] in ("pending", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
        job = http.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "completed"
    # finished jobs are purged after their retention time; the response stays
    assert http.delete(f"/v1/jobs/{job_id}").status_code in (200, 204)
    kept = client.responses.retrieve(created.id)
    assert kept.status in ("completed", "incomplete")
    assert kept.output_text == job["result"]["output"][0]["content"][0]["text"]


def test_cancel_a_background_response(client: OpenAI) -> None:
    created = client.responses.create(model=MODEL, input="Write a long story.",
                                      background=True, max_output_tokens=2000)
    cancelled = client.responses.cancel(created.id)
    assert cancelled.status in ("cancelled", "completed")
    assert client.responses.retrieve(created.id).status == cancelled.status


def test_errors_in_openai_shape(http: httpx.Client) -> None:
    missing = http.post("/v1/responses", json={"model": MODEL})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "input"
    unknown = http.get("/v1/responses/resp_nope")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "response_not_found"
    tool = http.post("/v1/responses", json={"model": MODEL, "input": "x",
                                            "tools": [{"type": "web_search"}]})
    assert tool.status_code == 400 and tool.json()["error"]["param"] == "tools[0].type"
    bg = http.post("/v1/responses", json={"model": MODEL, "input": "x", "background": True,
                                          "store": False})
    assert bg.status_code == 400 and bg.json()["error"]["param"] == "store"
    sync = http.post("/v1/responses", json={"model": MODEL, "input": "x",
                                            "max_output_tokens": 2}).json()
    Response.model_validate(sync)  # the SDK's own model, strictly validated
    Response.model_validate(http.get(f"/v1/responses/{sync['id']}").json())
    not_bg = http.post(f"/v1/responses/{sync['id']}/cancel")
    assert not_bg.status_code == 400
