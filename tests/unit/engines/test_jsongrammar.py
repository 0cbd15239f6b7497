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
from inferd.engines.llamacpp.sampling import TokenText, grammar_error
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
    tokens = [t for c in text for t in model.tokenize(c.encode(), add_bos=False, special=False)]
    return accepts_tokens(model, grammar, tokens)


def accepts_tokens(model: Any, grammar: str, tokens: list[int]) -> bool:
    """Whether the grammar lets the model write ``tokens`` and then end."""
    vocab = model._model.vocab
    assert grammar_error(vocab, grammar) is None
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    try:
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


def accepts_bytes(model: Any, grammar: str, raw: bytes) -> bool:
    """Whether the grammar lets the model write ``raw`` a byte at a time (so a character of
    several bytes is read from its parts, as a model may write it) and then end."""
    vocab = model._model.vocab
    # the tokenizer turns bytes that are no UTF-8 into U+FFFD: the byte tokens are found by
    # their text instead
    text = TokenText(vocab)
    byte_token = {piece[0]: token for token in range(model.n_vocab())
                  if len(piece := text.piece(token)) == 1}
    return accepts_tokens(model, grammar, [byte_token[b] for b in raw])


@pytest.mark.parametrize("grammar", [jsongrammar.schema_gbnf(NOTE), jsongrammar.JSON_OBJECT,
                                     jsongrammar.schema_gbnf(PATTERN)])
def test_strings_hold_only_unicode_scalar_values(vocab: Any, grammar: str) -> None:
    """A surrogate's bytes or a code point past U+10FFFF would be read as one character by
    the grammar but decode to several U+FFFD (a maxLength passed, the JSON not valid)."""
    def doc(middle: bytes) -> bytes:
        key = b"code" if "code-kv" in grammar else b"title"
        tail = b', "body": "x"}' if key == b"title" else b"}"
        return b'{"' + key + b'": "a' + middle + b'b"' + tail

    emoji = "\U0001F600".encode()  # 4 bytes, valid
    if "code-kv" in grammar:  # the pattern ^a.b$: exactly one character between a and b
        assert accepts_bytes(vocab, grammar, doc(emoji))
    else:
        assert accepts_bytes(vocab, grammar, doc(emoji + "é".encode()))
    for bad in (b"\xed\xa0\x80",           # U+D800, a surrogate
                b"\xed\xbf\xbf",           # U+DFFF
                b"\xf4\x90\x80\x80",       # U+110000, past the last code point
                b"\xf4\xbf\xbf\xbf"):      # U+13FFFF (F5..FF: no token of this model)
        assert not accepts_bytes(vocab, grammar, doc(bad)), bad
