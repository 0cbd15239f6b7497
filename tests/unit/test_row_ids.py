"""Numbers in paths and headers are ASCII digits: "³" is a digit to ``str.isdigit`` but no
number to ``int``, and must name no row (a 404 or 400, never a 500; found by the fuzzer)."""

from __future__ import annotations

import pytest

from inferd.errors import InvalidRequest
from inferd.http.jobs import _last_event_id
from inferd.routing.manage import _row_id


def test_row_ids_are_ascii_digits() -> None:
    assert _row_id("42") == 42
    assert _row_id("³") is None and _row_id("٣") is None and _row_id("echo") is None


def test_last_event_id_must_be_ascii_digits() -> None:
    assert _last_event_id("7", None) == 7
    with pytest.raises(InvalidRequest):
        _last_event_id("³", None)
