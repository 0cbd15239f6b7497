"""JSON documents whose shape is not fixed: a JSON Schema, the OpenAPI document, the fields a
client or a replica adds beyond the ones inferd reads, a SCIM resource's extension attributes.

``JsonObject`` is checked: its values are JSON (text, numbers, booleans, null, lists and objects
of them), and a value read from it must be narrowed (``isinstance``) before it is used as one
kind. Data whose shape is known gets its own type (a pydantic model, a dataclass or a
``TypedDict``), not this one.
"""
from __future__ import annotations

from typing import TypeAlias

from pydantic import JsonValue

__all__ = ["JsonObject", "JsonValue"]

JsonObject: TypeAlias = dict[str, JsonValue]
