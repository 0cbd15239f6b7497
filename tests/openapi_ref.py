"""Validate answers against the official OpenAI OpenAPI document in ../shared/reference/."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT

SPEC = ROOT.parent / "shared" / "reference" / "openai-openapi.yaml"


def _nullable(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable: true`` becomes JSON Schema's ``null`` type."""
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _nullable(value) for key, value in node.items()}
    if out.pop("nullable", False):
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        elif kind is None:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


@functools.cache
def _document() -> dict[str, Any]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with Path(SPEC).open() as fh:
        document: dict[str, Any] = _nullable(yaml.load(fh, Loader=loader))
    return document


def validate(schema_name: str, instance: Any) -> None:
    """Raise ``jsonschema.ValidationError`` if ``instance`` does not match the named schema.

    Without the reference document (a clone with no ``../shared``) this check is left out and
    the calling test's other assertions still run; ``test_reference_spec_is_available`` is the
    one test that reports the skip.
    """
    if not SPEC.exists():
        return
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    document = _document()
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource("urn:openai", resource)
    schema = {"$ref": f"urn:openai#/components/schemas/{schema_name}"}
    jsonschema.Draft202012Validator(schema, registry=registry).validate(instance)


def require_spec() -> None:
    if not SPEC.exists():
        pytest.skip(f"the OpenAI reference spec is not at {SPEC} (a clone without ../shared)")
