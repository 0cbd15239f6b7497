"""The Conversations API, Responses' ``conversation`` and ``prompt`` parameters, and
``/v1/responses/input_tokens`` through the official ``openai`` SDK (its typed objects judge the
answers), on ``inferd serve`` with echo models (the echo model answers the last user message,
so an answer shows what the model was sent) and API keys: a conversation or a prompt belongs to
one key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types.conversations import Conversation, ConversationItemList
from openai.types.responses import Response

from tests.helpers import InferdProcess, wait_for

ADMIN_KEY = "sk-test-admin-conversations-0123456789"
MODELS = json.dumps([{"name": "echo", "kind": "echo"},
                     {"name": "slow", "kind": "echo", "echo_delay": 0.05}])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferdProcess]:
    env = {"INFERD_MODELS": MODELS, "INFERD_ADMIN_KEY": ADMIN_KEY,
           "INFERD_KEY_REFRESH_SECONDS": "0.3", "INFERD_CONVERSATION_MAX_ITEMS": "12",
           "INFERD_RESPONSES_MAX_CHAIN": "3"}
    with InferdProcess(tmp_path_factory.mktemp("conversations"), "--no-bundled",
                       env=env) as proc:
        yield proc


@pytest.fixture(scope="module")
def keys(server: InferdProcess) -> dict[str, dict[str, Any]]:
    made = {}
    for name in ("a", "b"):
        response = httpx.post(server.url + "/admin/v1/keys", json={"name": name},
                              headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert response.status_code == 201, response.text
        made[name] = response.json()
    return made


def sdk(server: InferdProcess, key: str) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=60)


def admin(server: InferdProcess) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=60,
                        headers={"Authorization": f"Bearer {ADMIN_KEY}"})


def texts(items: list[Any]) -> list[str]:
    return [part.text for item in items for part in item.content]


def test_conversation_objects_and_items(server: InferdProcess,
                                        keys: dict[str, dict[str, Any]]) -> None:
    a = sdk(server, keys["a"]["key"])
    conversation = a.conversations.create(
        items=[{"role": "user", "content": "one"}, {"type": "message", "role": "assistant",
                                                    "content": "two"}],
        metadata={"topic": "numbers"})
    raw = a.conversations.with_raw_response.retrieve(conversation.id).http_response.json()
    assert Conversation.model_validate(raw, strict=True).metadata == {"topic": "numbers"}
    assert conversation.id.startswith("conv_") and conversation.object == "conversation"
    added = a.conversations.items.create(conversation.id, items=[
        {"role": "user", "content": [{"type": "input_text", "text": "three"}]}])
    assert texts(added.data) == ["three"]
    listed = a.conversations.items.list(conversation.id, order="asc")
    assert texts(listed.data) == ["one", "two", "three"]
    assert [i.role for i in listed.data] == ["user", "assistant", "user"]  # type: ignore[union-attr]
    page = a.with_options().get(f"/conversations/{conversation.id}/items",
                                cast_to=object, options={"params": {"limit": 2}})
    ConversationItemList.model_validate(page)
    assert [texts([i]) for i in ConversationItemList.model_validate(page).data] == \
        [["three"], ["two"]]  # newest first by default
    assert page["has_more"] is True  # type: ignore[index]
    after = a.conversations.items.list(conversation.id, order="desc", after=page["last_id"])  # type: ignore[index]
    assert texts(after.data) == ["one"] and not after.has_more
    every = [i.id for i in a.conversations.items.list(conversation.id, limit=1)]  # pages
    assert len(every) == 3 and len(set(every)) == 3
    one = a.conversations.items.retrieve(every[0], conversation_id=conversation.id)
    assert texts([one]) == ["three"]
    a.conversations.items.delete(every[0], conversation_id=conversation.id)
    assert texts(a.conversations.items.list(conversation.id, order="asc").data) == ["one", "two"]
    updated = a.conversations.update(conversation.id, metadata={"topic": "changed"})
    assert updated.metadata == {"topic": "changed"}
    assert a.conversations.retrieve(conversation.id).metadata == {"topic": "changed"}
    # another key: no such conversation, whatever it asks
    b = sdk(server, keys["b"]["key"])
    for call in (lambda: b.conversations.retrieve(conversation.id),
                 lambda: b.conversations.items.list(conversation.id),
                 lambda: b.conversations.delete(conversation.id),
                 lambda: b.responses.create(model="echo", input="x",
                                            conversation=conversation.id)):
        with pytest.raises(openai.NotFoundError):
            call()
    deleted = a.conversations.delete(conversation.id)
    assert deleted.deleted and deleted.object == "conversation.deleted"
    with pytest.raises(openai.NotFoundError):
        a.conversations.retrieve(conversation.id)


def test_bad_conversation_requests_are_400s(server: InferdProcess,
                                            keys: dict[str, dict[str, Any]]) -> None:
    with httpx.Client(base_url=server.url, timeout=60, headers={
            "Authorization": f"Bearer {keys['a']['key']}"}) as http:
        for body, param in (({"items": [{"type": "web_search_call"}]}, "items[0].type"),
                            ({"items": [{"role": "robot", "content": "x"}]}, "items[0].role"),
                            ({"items": [{"role": "user", "content": "x", "id": "i" * 65}]},
                             "items[0].id"),
                            ({"metadata": {"k" * 65: "v"}}, "metadata"),
                            ({"items": [{"role": "user", "content": "x"}] * 21}, "items")):
            response = http.post("/v1/conversations", json=body)
            assert response.status_code == 400, (body, response.text)
            assert (response.json()["error"]["param"] or "").startswith(param), response.text
        conv = http.post("/v1/conversations", json={}).json()
        both = http.post("/v1/responses", json={"model": "echo", "input": "x",
                                                "conversation": conv["id"],
                                                "previous_response_id": "resp_x"})
        assert both.status_code == 400 and both.json()["error"]["param"] == "conversation"
        empty = http.post(f"/v1/conversations/{conv['id']}/items", json={"items": []})
        assert empty.status_code == 400
        missing = http.get(f"/v1/conversations/{conv['id']}/items/msg_nope")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "item_not_found"


def test_responses_read_and_extend_a_conversation(server: InferdProcess,
                                                  keys: dict[str, dict[str, Any]]) -> None:
    a = sdk(server, keys["a"]["key"])
    conversation = a.conversations.create(items=[{"role": "user", "content": "hello"}])
    first = a.responses.create(model="echo", input="first words",
                               conversation=conversation.id)
    raw = a.responses.with_raw_response.retrieve(first.id).http_response.json()
    assert Response.model_validate(raw).conversation.id == conversation.id  # type: ignore[union-attr]
    assert first.output_text == "first words"
    with a.responses.stream(model="echo", input="second words",
                            conversation={"id": conversation.id}) as stream:
        streamed = stream.get_final_response()
    assert streamed.output_text == "second words"
    items = a.conversations.items.list(conversation.id, order="asc", limit=100).data
    assert texts(items) == ["hello", "first words", "first words", "second words",
                            "second words"]
    assert [i.role for i in items] == ["user", "user", "assistant", "user", "assistant"]  # type: ignore[union-attr]
    assert items[2].id == first.output[0].id  # the output items themselves
    counted = a.responses.input_tokens.count(model="echo", input="x y",
                                             conversation=conversation.id)
    assert counted.object == "response.input_tokens" and counted.input_tokens == 2
    assert len(a.conversations.items.list(conversation.id).data) == 5  # counting adds nothing
    background = a.responses.create(model="slow", input="in the background",
                                    conversation=conversation.id, background=True)

    def finished() -> bool:
        return a.responses.retrieve(background.id).status == "completed"

    wait_for(finished, what="the background response completing")
    wait_for(lambda: texts(a.conversations.items.list(conversation.id, limit=1).data)
             == ["in the background"], what="its output added to the conversation")
    # a conversation holds at most INFERD_CONVERSATION_MAX_ITEMS (12 here) items
    for _ in range(4):
        a.conversations.items.create(conversation.id, items=[
            {"role": "user", "content": "filler"}])
    assert len(a.conversations.items.list(conversation.id, limit=100).data) == 11
    with pytest.raises(openai.BadRequestError) as full:
        a.responses.create(model="echo", input="too many", conversation=conversation.id)
    assert full.value.code == "conversation_too_long"


def test_prompt_templates_versions_and_variables(server: InferdProcess,
                                                 keys: dict[str, dict[str, Any]]) -> None:
    with admin(server) as http:
        created = http.post("/admin/v1/prompts", json={
            "name": "greeter", "key_id": keys["a"]["id"], "instructions": "Be {{mood}}.",
            "input": [{"role": "user", "content": "Tell me about {{topic}}."}]})
        assert created.status_code == 201, created.text
        prompt = created.json()
        assert prompt["version"] == "1" and prompt["variables"] == ["mood", "topic"]
        assert prompt["key_id"] == str(keys["a"]["id"])
        assert http.post("/admin/v1/prompts", json={"name": "x", "key_id": 999999}
                         ).status_code == 404
        bad = http.post("/admin/v1/prompts", json={"name": "x", "input": [{"type": "nope"}]})
        assert bad.status_code == 400
    a = sdk(server, keys["a"]["key"])
    answered = a.responses.create(model="echo", prompt={
        "id": prompt["id"], "variables": {"mood": "kind", "topic": "owls"}})
    assert answered.output_text == "Tell me about owls."
    assert answered.prompt is not None and answered.prompt.version == "1"
    assert answered.instructions == "Be kind."
    # the request's input comes after the template's messages
    after = a.responses.create(model="echo", input="And cats?", prompt={
        "id": prompt["id"], "variables": {"mood": "kind", "topic": {"type": "input_text",
                                                                     "text": "owls"}}})
    assert after.output_text == "And cats?"
    counted = a.responses.input_tokens.count(model="echo", extra_body={"prompt": {
        "id": prompt["id"], "variables": {"mood": "kind", "topic": "big grey owls"}}})
    assert counted.input_tokens == 6  # the echo model counts the last user message's words
    with pytest.raises(openai.BadRequestError) as missing:
        a.responses.create(model="echo", prompt={"id": prompt["id"],
                                                 "variables": {"mood": "kind"}})
    assert missing.value.param == "prompt.variables"
    with admin(server) as http:
        v2 = http.post(f"/admin/v1/prompts/{prompt['id']}/versions", json={
            "input": [{"role": "user", "content": "Version two on {{topic}}."}]})
        assert v2.status_code == 201 and v2.json()["version"] == "2"
        assert [v["version"] for v in v2.json()["versions"]] == ["1", "2"]
        listed = http.get("/admin/v1/prompts").json()["data"]
        assert prompt["id"] in [p["id"] for p in listed]
    latest = a.responses.create(model="echo", prompt={"id": prompt["id"],
                                                      "variables": {"topic": "owls"}})
    assert latest.output_text == "Version two on owls." and latest.prompt.version == "2"  # type: ignore[union-attr]
    pinned = a.responses.create(model="echo", prompt={
        "id": prompt["id"], "version": "1", "variables": {"mood": "calm", "topic": "owls"}})
    assert pinned.output_text == "Tell me about owls."
    with pytest.raises(openai.NotFoundError):
        a.responses.create(model="echo", prompt={"id": prompt["id"], "version": "3"})
    b = sdk(server, keys["b"]["key"])
    with pytest.raises(openai.NotFoundError):  # the prompt is A's
        b.responses.create(model="echo", prompt={"id": prompt["id"],
                                                 "variables": {"topic": "owls"}})
    with admin(server) as http:
        assert http.delete(f"/admin/v1/prompts/{prompt['id']}").status_code == 200
        assert http.get(f"/admin/v1/prompts/{prompt['id']}").status_code == 404
    with pytest.raises(openai.NotFoundError):
        a.responses.create(model="echo", prompt={"id": prompt["id"],
                                                 "variables": {"topic": "owls"}})


def test_input_tokens_needs_a_model_and_owns_its_references(
        server: InferdProcess, keys: dict[str, dict[str, Any]]) -> None:
    a, b = sdk(server, keys["a"]["key"]), sdk(server, keys["b"]["key"])
    with pytest.raises(openai.BadRequestError) as no_model:
        a.responses.input_tokens.count(input="hi")
    assert no_model.value.param == "model"
    first = a.responses.create(model="echo", input="one two three")
    assert a.responses.input_tokens.count(model="echo", input="four five",
                                          previous_response_id=first.id).input_tokens == 2
    with pytest.raises(openai.NotFoundError):
        b.responses.input_tokens.count(model="echo", input="x",
                                       previous_response_id=first.id)


def test_a_previous_response_chain_is_walked_and_bounded(
        server: InferdProcess, keys: dict[str, dict[str, Any]]) -> None:
    a = sdk(server, keys["a"]["key"])
    chain = [a.responses.create(model="echo", input="one")]
    for word in ("two", "three"):
        chain.append(a.responses.create(model="echo", input=word,
                                        previous_response_id=chain[-1].id))
    a.responses.delete(chain[1].id)  # hidden, still part of the third one's conversation
    with pytest.raises(openai.NotFoundError):
        a.responses.retrieve(chain[1].id)
    with pytest.raises(openai.NotFoundError):
        a.responses.create(model="echo", input="x", previous_response_id=chain[1].id)
    # INFERD_RESPONSES_MAX_CHAIN is 3: a request reads at most three stored responses back
    fourth = a.responses.create(model="echo", input="four", previous_response_id=chain[2].id)
    with pytest.raises(openai.BadRequestError) as long:
        a.responses.create(model="echo", input="five", previous_response_id=fourth.id)
    assert long.value.code == "conversation_too_long"
    assert long.value.param == "previous_response_id"
    branch = a.responses.create(model="echo", input="again", previous_response_id=chain[0].id)
    assert branch.output_text == "again"


def test_a_queued_background_stream_waits_for_its_turn(
        server: InferdProcess, keys: dict[str, dict[str, Any]]) -> None:
    """While its job waits behind another (one worker per model), a background stream says
    nothing; then it sends the whole response, numbered from 0 (it used to end at once with a
    ``response.failed`` whose status was ``queued``)."""
    a = sdk(server, keys["a"]["key"])
    ahead = a.responses.create(model="slow", input=" ".join(["word"] * 40), background=True)
    events = list(a.responses.create(model="slow", input="after the other one",
                                     background=True, stream=True))
    assert a.responses.retrieve(ahead.id).status == "completed"  # it ran first
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed", types
    assert "response.failed" not in types
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].response.output_text == "after the other one"  # type: ignore[union-attr]
