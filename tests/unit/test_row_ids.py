"""Numbers in paths, headers and JSON keys are ASCII digits: "³" is a digit to ``str.isdigit``
but no number to ``int``, "١٢" is 12 to ``int``, and ``int`` also takes "+1", " 1" and "1_000".
Each must name no row, event or token (a 404 or 400, never a 500 or another number; the first
was found by the fuzzer)."""

from __future__ import annotations

import pytest

from inferd.errors import InvalidRequest
from inferd.http.jobs import _last_event_id
from inferd.numerals import ascii_int
from inferd.routing.manage import _row_id

NOT_NUMBERS = ["²", "³", "١٢", "٣", "+1", "-1", " 1", "1 ", "1_000", "1.0", "", "0x10", "echo"]


def test_only_ascii_digits_are_numbers() -> None:
    assert ascii_int("0") == 0 and ascii_int("42") == 42 and ascii_int("007") == 7
    assert ascii_int("9" * 30) == int("9" * 30)
    assert [text for text in NOT_NUMBERS if ascii_int(text) is not None] == []


def test_row_ids_are_ascii_digits() -> None:
    assert _row_id("42") == 42
    assert [text for text in NOT_NUMBERS if _row_id(text) is not None] == []


@pytest.mark.parametrize("header", NOT_NUMBERS)
def test_last_event_id_must_be_ascii_digits(header: str) -> None:
    assert _last_event_id("7", None) == 7
    if header == "":
        assert _last_event_id(header, None) == 0  # an empty header is no header
        return
    with pytest.raises(InvalidRequest):
        _last_event_id(header, None)
