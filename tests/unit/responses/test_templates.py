"""Prompt templates are filled from their variables, and conversation items are stored in the
shape OpenAI lists them."""

from __future__ import annotations

import pytest

from inferd.errors import InvalidRequest
from inferd.responses.conversations import stored_items
from inferd.responses.prompts import render, template_variables

TEMPLATE = {"instructions": "Be {{ mood }}.",
            "input": [{"role": "user", "content": [
                {"type": "input_text", "text": "About {{topic}}, {{mood}} again."}]}]}


def test_variables_are_listed_in_order_of_first_use() -> None:
    assert template_variables(TEMPLATE) == ["mood", "topic"]


def test_render_fills_every_placeholder() -> None:
    instructions, items = render(TEMPLATE, {"mood": "calm",
                                            "topic": {"type": "input_text", "text": "owls"}})
    assert instructions == "Be calm."
    assert items[0]["content"][0]["text"] == "About owls, calm again."
    assert TEMPLATE["instructions"] == "Be {{ mood }}."  # the stored template is untouched


def test_a_missing_or_unusable_variable_is_a_400() -> None:
    with pytest.raises(InvalidRequest) as missing:
        render(TEMPLATE, {"mood": "calm"})
    assert missing.value.param == "prompt.variables" and "topic" in str(missing.value)
    with pytest.raises(InvalidRequest) as image:
        render(TEMPLATE, {"mood": "calm", "topic": {"type": "input_image", "image_url": "x"}})
    assert image.value.param == "prompt.variables.topic"


def test_stored_items_have_ids_statuses_and_content_parts() -> None:
    items = stored_items([{"role": "user", "content": "hi"},
                          {"type": "message", "role": "assistant", "content": "yes",
                           "id": "msg_given"},
                          {"type": "function_call_output", "call_id": "c1", "output": "4"}])
    assert items[0]["id"].startswith("msg_") and items[0]["type"] == "message"
    assert items[0]["content"] == [{"type": "input_text", "text": "hi"}]
    assert items[1]["id"] == "msg_given"
    assert items[1]["content"] == [{"type": "output_text", "text": "yes", "annotations": []}]
    assert items[2]["id"].startswith("fco_")
    assert {item["status"] for item in items} == {"completed"}
    with pytest.raises(InvalidRequest) as bad:
        stored_items([{"role": "user", "content": "x"}, {"type": "web_search_call"}])
    assert bad.value.param == "items[1].type"
