"""JSON grammars that keep JSON's rules, checked by llama.cpp's own grammar sampler on the
bundled model's vocabulary: text is fed one character's tokens at a time, and a token the
grammar forbids is refused."""

from __future__ import annotations

import ctypes
import json
from collections.abc import Iterator
from typing import Any

import llama_cpp
import pytest

from inferd.engines import jsongrammar, tools
from inferd.engines.llamacpp.sampling import grammar_error
from inferd.settings import bundled_gguf_path

NOTE = {"type": "object", "properties": {"title": {"type": "string"},
                                         "body": {"type": "string"}},
        "required": ["title", "body"]}
PATTERN = {"type": "object", "properties": {"code": {"type": "string", "pattern": "^a.b$"}},
           "required": ["code"]}


@pytest.fixture(scope="module")
def vocab() -> Iterator[Any]:
    from llama_cpp import Llama

    model = Llama(model_path=bundled_gguf_path(), vocab_only=True, verbose=False)
    yield model
    model.close()


def accepts(model: Any, grammar: str, text: str) -> bool:
    """Whether the grammar lets the model write ``text`` and then end."""
    vocab = model._model.vocab
    assert grammar_error(vocab, grammar) is None
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    try:
        tokens = [t for c in text
                  for t in model.tokenize(c.encode(), add_bos=False, special=False)]
        for token in [*tokens, model.token_eos()]:
            data = (llama_cpp.llama_token_data * 1)(llama_cpp.llama_token_data(token, 1.0, 0.0))
            array = llama_cpp.llama_token_data_array(data, 1, -1, False)
            llama_cpp.llama_sampler_apply(sampler, ctypes.byref(array))
            if data[0].logit == float("-inf"):
                return False
            if token != model.token_eos():
                llama_cpp.llama_sampler_accept(sampler, token)
        return True
    finally:
        llama_cpp.llama_sampler_free(sampler)


def note(body: str) -> str:
    return '{"title": "List", "body": "' + body + '"}'


@pytest.mark.parametrize("raw", ["\n", "\t", "\r", "\x01", "\x1f"])
def test_schema_strings_refuse_raw_control_characters(vocab: Any, raw: str) -> None:
    grammar = jsongrammar.schema_gbnf(NOTE)
    assert accepts(vocab, grammar, note("eggs, milk"))
    assert accepts(vocab, grammar, note("eggs\\nmilk\\t\\u0001"))  # escaped: JSON
    assert not accepts(vocab, grammar, note(f"eggs{raw}milk"))


def test_a_patterns_dot_cannot_end_the_string(vocab: Any) -> None:
    grammar = jsongrammar.schema_gbnf(PATTERN)
    assert accepts(vocab, grammar, '{"code": "axb"}')
    for bad in ('{"code": "a\nb"}', '{"code": "a\tb"}', '{"code": "a"b"}'):
        assert not accepts(vocab, grammar, bad), bad


def test_json_object_refuses_raw_control_characters(vocab: Any) -> None:
    assert accepts(vocab, jsongrammar.JSON_OBJECT, '{"a": [1, -2.5e3, true, null, {"b": "x\\ny"}]}')
    assert accepts(vocab, jsongrammar.JSON_OBJECT, '{\n  "a": 1\n}')  # pretty-printed
    assert not accepts(vocab, jsongrammar.JSON_OBJECT, '{"a": "x\ny"}')
    assert not accepts(vocab, jsongrammar.JSON_OBJECT, '[1]')  # an object, not any value


def test_tool_call_arguments_refuse_raw_control_characters(vocab: Any) -> None:
    plan = tools.ToolPlan([{"name": "save_note", "description": "", "parameters": NOTE}],
                          required=True, parallel=False)
    grammar = tools.grammar_text(plan)
    call = '<tool_call>\n{"name": "save_note", "arguments": ' + note("{body}") + "}\n</tool_call>"
    assert accepts(vocab, grammar, call.replace("{body}", "a\\nb"))
    assert not accepts(vocab, grammar, call.replace("{body}", "a\nb"))


def test_auto_text_answer_follows_the_response_format(vocab: Any) -> None:
    # the response schema's rules share names with the tools' ("title", "body", "root"):
    # renamed, each keeps its own definition
    other = {"type": "object", "properties": {"title": {"type": "integer"}},
             "required": ["title"]}
    plan = tools.ToolPlan([{"name": "save_note", "description": "", "parameters": NOTE}],
                          required=False, parallel=True)
    grammar = tools.grammar_text(plan, jsongrammar.schema_gbnf(other))
    call = ('<tool_call>\n{"name": "save_note", "arguments": ' + note("x") +
            "}\n</tool_call>")
    assert accepts(vocab, grammar, call)
    assert accepts(vocab, grammar, '{"title": 12}')
    assert not accepts(vocab, grammar, '{"title": "12"}')  # the tools' "title" is a string
    assert not accepts(vocab, grammar, "Hello there")  # no free text beside the format
    with_object = tools.grammar_text(plan, jsongrammar.JSON_OBJECT)
    assert accepts(vocab, with_object, '{"any": ["thing"]}')
    assert accepts(vocab, with_object, call)
    assert not accepts(vocab, with_object, "Hello there")


def test_prefixed_renames_references_only() -> None:
    gbnf = ('root ::= "{" space item "}" space\nitem ::= "\\"item\\"" [a-z{}] {1,2} | '
            'space\nspace ::= " "?')
    text, root = jsongrammar.prefixed(gbnf, "answer-", {"answer-space"})
    assert root == "answer-1-root"
    assert jsongrammar.rules(text) == {
        "answer-1-root": '"{" space item "}" space'.replace("space", "answer-1-space")
                        .replace("item", "answer-1-item"),
        "answer-1-item": '"\\"item\\"" [a-z{}] {1,2} | answer-1-space',
        "answer-1-space": '" "?'}


def test_json_strings_changes_only_the_string_characters() -> None:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    before = json_schema_to_gbnf(json.dumps(PATTERN))
    after = jsongrammar.json_strings(before)
    changed = set(before.splitlines()) ^ set(after.splitlines())
    assert {line.split(" ::= ")[0] for line in changed} == {"dot"}
    before = json_schema_to_gbnf(json.dumps(NOTE))
    changed = set(before.splitlines()) ^ set(jsongrammar.json_strings(before).splitlines())
    assert {line.split(" ::= ")[0] for line in changed} == {"char"}
