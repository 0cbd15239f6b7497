"""The rules of stored and control-plane JSON bodies: each refusal is a 400 naming the place."""

from __future__ import annotations

import pytest

from inferd.errors import InvalidRequest
from inferd.json_bodies import MAX_DEPTH, check_value, parse_json


def refusal(raw: bytes, *, unique_keys: bool = True) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        parse_json(raw, unique_keys=unique_keys)
    assert info.value.status == 400 and info.value.type == "invalid_request_error"
    return info.value


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999"])
def test_non_finite_numbers_are_refused_with_their_place(number: bytes) -> None:
    error = refusal(b'{"body": {"messages": [{"n": 1}, {"n": ' + number + b"}]}}")
    assert error.param == "body.messages[1].n" and error.code == "invalid_value"


def test_nesting_is_limited() -> None:
    def nested(depth: int) -> bytes:
        return b"[" * depth + b"]" * depth

    assert parse_json(nested(MAX_DEPTH)) is not None
    error = refusal(nested(MAX_DEPTH + 1))
    assert error.code == "invalid_json" and error.param == "[0]" * MAX_DEPTH
    assert refusal(nested(10_000)).code == "invalid_json"  # beyond any parser's recursion


def test_nul_is_refused_in_strings_and_keys_but_an_escaped_backslash_is_text() -> None:
    assert refusal(b'{"name": "a\\u0000b"}').param == "name"
    assert refusal(b'{"meta": {"k\\u0000": "v"}}').param == "meta"
    assert parse_json(b'{"name": "a\\\\u0000b"}') == {"name": "a\\u0000b"}


def test_a_key_given_twice_is_refused_when_asked() -> None:
    raw = b'{"name": "x", "scope": "user", "scope": "admin"}'
    error = refusal(raw)
    assert error.code == "duplicate_key" and error.param == "scope"
    assert refusal(b'[{"a": {"b": 1, "b": 2}}]').param == "b"
    assert parse_json(raw, unique_keys=False) == {"name": "x", "scope": "admin"}


def test_broken_json_is_invalid_json() -> None:
    for raw in (b"", b"{", b"\xff\xfe", b'{"a": "\\ud800"}', b"[1,]"):
        error = refusal(raw)
        assert error.code == "invalid_json" and error.param is None, raw


def test_check_value_walks_parsed_lines() -> None:
    check_value({"custom_id": "1", "body": {"model": "m", "temperature": 0.5}})
    with pytest.raises(InvalidRequest) as info:
        check_value({"body": {"temperature": float("nan")}})
    assert info.value.param == "body.temperature"
