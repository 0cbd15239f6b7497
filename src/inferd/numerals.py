"""Whole numbers written in text that clients send (JSON object keys, headers, path segments).

``str.isdigit()`` is true for characters ``int()`` refuses (superscripts such as ``"²"``) or
reads as another number (``"١٢"``, Arabic-Indic digits, is 12 to ``int()``), and ``int()``
itself accepts more than digits (``"+1"``, ``" 1"``, ``"1_000"``). A number a client writes
is read here, one way: ASCII digits only, nothing else.
"""

from __future__ import annotations


def ascii_int(text: str) -> int | None:
    """``text`` as a non-negative integer when it is only ASCII digits ``0``-``9``; else None."""
    if not (text.isascii() and text.isdigit()):
        return None
    return int(text)
