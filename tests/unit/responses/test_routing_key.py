"""The routing key of a Responses request: every response of a ``previous_response_id`` chain
gets the key its first response had by its prompt's head."""

from __future__ import annotations

from inferd.responses.service import _chain_key
from inferd.routing.affinity import routing_key
from inferd.schemas.responses import ResponseCreateRequest, to_chat
from inferd.store.responses import ResponseRecord


def first_turn(instructions: str, text: str) -> ResponseCreateRequest:
    return ResponseCreateRequest.model_validate(
        {"model": "m", "instructions": instructions, "input": text}
    )


def record(request: ResponseCreateRequest, items: list[dict[str, object]]) -> ResponseRecord:
    return ResponseRecord(
        id="resp_1",
        owner="k",
        model="m",
        created_at=0.0,
        input_items=items,
        response={"instructions": request.instructions, "output": []},
    )


def test_a_chain_is_routed_by_its_first_responses_prompt_head() -> None:
    items: list[dict[str, object]] = [{"type": "message", "role": "user", "content": "Hello"}]
    first = first_turn("You are a pirate.", "Hello")
    routed_first = routing_key(to_chat(first, items))
    assert routed_first is not None
    assert _chain_key(record(first, items)) == routed_first
    # whatever the later turn's instructions, the chain keeps its first response's key
    other = record(first_turn("You are a pirate.", "Hello"), items)
    assert _chain_key(other) == routed_first
    changed = first_turn("Now you are a cat.", "Hello")
    assert routing_key(to_chat(changed, items)) != routed_first


def test_a_first_response_without_instructions() -> None:
    items: list[dict[str, object]] = [{"type": "message", "role": "user", "content": "Hi"}]
    request = ResponseCreateRequest.model_validate({"model": "m", "input": "Hi"})
    assert _chain_key(record(request, items)) == routing_key(to_chat(request, items))
