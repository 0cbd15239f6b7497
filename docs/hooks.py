"""MkDocs hook: the API reference, generated at build time from inferd's own OpenAPI document.

``create_app(...).openapi()`` is the document ``GET /openapi.json`` serves (no server, no
network). From it the build writes, in memory:

* ``reference/openapi.json``: the document itself, to download or feed to a client generator;
* ``reference/index.md``: the tags, the security schemes and the access levels;
* ``reference/<tag>.md``: one page per tag, every operation with its parameters, body and answers;
* ``reference/schemas.md``: every component schema, its fields, types and bounds.

The pages are added to the navigation under "API reference" (``mkdocs.yml`` names the index).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("get", "post", "put", "patch", "delete")
TAG_TITLES = {
    "openai": "OpenAI API", "anthropic": "Anthropic Messages",
    "responses": "Responses and conversations", "jobs": "Jobs", "batch": "Files and batches",
    "images": "Images", "health": "Health",
    "monitoring": "Monitoring", "admin": "Admin API", "engines": "Engine registration",
    "contexts-results": "Contexts and results", "queued-generate": "Queued generate",
    "image-backend": "Image backend", "proxy-toolkit": "Proxy toolkit",
    "model-host": "Model host",
}

_pages: dict[str, str] = {}


def document() -> dict[str, Any]:
    """inferd's OpenAPI document, from this checkout's source."""
    src = str(ROOT / "src")
    if src not in sys.path:
        sys.path.insert(0, src)
    from inferd.app import create_app
    from inferd.settings import Settings

    doc: dict[str, Any] = create_app(Settings(bundled_models=False)).openapi()
    return doc


def slug(tag: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", tag.lower()).strip("-")


def cell(text: object) -> str:
    """Text fit for a Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def prose(text: str) -> str:
    """A docstring-style description as Markdown: ``code`` is fine as it is."""
    return text.strip()


def ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def type_of(schema: dict[str, Any], schemas_page: str) -> str:
    """A short Markdown spelling of a schema's type, linking component schemas."""
    if "$ref" in schema:
        name = ref_name(schema["$ref"])
        return f"[{name}]({schemas_page}#{name})"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            parts = [type_of(s, schemas_page) for s in schema[key]]
            return " or ".join(dict.fromkeys(parts))
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return type_of(schema["allOf"][0], schemas_page)
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " or ".join(str(k) for k in kind)
    if kind == "array":
        items = schema.get("items")
        return f"array of {type_of(items, schemas_page)}" if items else "array"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"object of {type_of(schema['additionalProperties'], schemas_page)}"
    return str(kind or "any")


BOUNDS = (("minimum", "≥ {}"), ("maximum", "≤ {}"), ("exclusiveMinimum", "> {}"),
          ("exclusiveMaximum", "< {}"), ("minLength", "at least {} characters"),
          ("maxLength", "at most {} characters"), ("minItems", "at least {} items"),
          ("maxItems", "at most {} items"), ("pattern", "matches `{}`"))


def bounds(schema: dict[str, Any]) -> list[str]:
    found = [text.format(schema[key]) for key, text in BOUNDS if key in schema]
    for key in ("anyOf", "oneOf"):
        for sub in schema.get(key, []):
            found += bounds(sub)
    return found


def field_notes(schema: dict[str, Any]) -> str:
    notes = []
    if schema.get("description"):
        notes.append(cell(schema["description"]))
    notes += bounds(schema)
    if "default" in schema and schema["default"] is not None:
        notes.append(f"default `{cell(json.dumps(schema['default']))}`")
    return "; ".join(notes)


def content_lines(content: dict[str, Any], schemas_page: str) -> str:
    return ", ".join(f"`{media}`: {type_of(body.get('schema', {}), schemas_page)}"
                     for media, body in content.items())


def operation(path: str, method: str, op: dict[str, Any]) -> list[str]:
    schemas_page = "schemas.md"
    out = [f"## `{method.upper()} {path}` {{#{op['operationId']}}}", ""]
    if op.get("summary"):
        out += [f"**{op['summary']}**", ""]
    if op.get("description"):
        out += [prose(op["description"]), ""]
    params = op.get("parameters", [])
    if params:
        out += ["| parameter | in | type | required | notes |", "|---|---|---|---|---|"]
        for p in params:
            schema = p.get("schema", {})
            notes = field_notes({**schema, "description": p.get("description", "")})
            out.append(f"| `{p['name']}` | {p['in']} | {type_of(schema, schemas_page)} | "
                       f"{'yes' if p.get('required') else 'no'} | {notes} |")
        out.append("")
    body = op.get("requestBody")
    if body:
        need = "required" if body.get("required") else "optional"
        out += [f"Request body ({need}): {content_lines(body.get('content', {}), schemas_page)}",
                ""]
    out += ["| status | meaning | body |", "|---|---|---|"]
    for status, answer in op.get("responses", {}).items():
        out.append(f"| {status} | {cell(answer.get('description', ''))} | "
                   f"{content_lines(answer.get('content', {}), schemas_page)} |")
    out.append("")
    return out


def schema_page(schemas: dict[str, Any]) -> str:
    out = ["# Schemas", "",
           "Every request and answer body of the [API reference](index.md), as the OpenAPI "
           "document's components define them.", ""]
    for name in sorted(schemas, key=str.lower):
        schema = schemas[name]
        out += [f"## {name} {{#{name}}}", ""]
        if schema.get("description"):
            out += [prose(schema["description"]), ""]
        props = schema.get("properties")
        if props:
            required = set(schema.get("required", []))
            out += ["| field | type | required | notes |", "|---|---|---|---|"]
            for field, sub in props.items():
                out.append(f"| `{field}` | {type_of(sub, '')} | "
                           f"{'yes' if field in required else 'no'} | {field_notes(sub)} |")
            out.append("")
        elif "properties" not in schema:
            out += [f"Type: {type_of(schema, '')}", ""]
    return "\n".join(out)


def build_pages(doc: dict[str, Any]) -> dict[str, str]:
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                op = item[method]
                for tag in op.get("tags", ["other"]):
                    by_tag.setdefault(tag, []).append((path, method, op))
    pages: dict[str, str] = {}
    index = [
        "# API reference", "",
        f"Generated from the OpenAPI document of inferd {doc['info']['version']} when these "
        "pages were built: the same document a running server serves at `/openapi.json` "
        "(and shows at `/docs` and `/redoc`). Download it: [openapi.json](openapi.json).", "",
        "A key is sent as `Authorization: Bearer KEY` or `X-API-Key: KEY`; which routes need "
        "one, and of which kind, is each operation's access level (the table in "
        "[Authorization](../security/authorization.md)). Errors have the OpenAI shape "
        "([ErrorResponse](schemas.md#ErrorResponse)); Anthropic's on `/v1/messages`.", "",
        "| tag | operations |", "|---|---|",
    ]
    for tag in sorted(by_tag, key=lambda t: list(TAG_TITLES).index(t) if t in TAG_TITLES
                      else len(TAG_TITLES)):
        ops = by_tag[tag]
        title = TAG_TITLES.get(tag, tag)
        name = f"reference/{slug(tag)}.md"
        index.append(f"| [{title}]({slug(tag)}.md) | {len(ops)} |")
        lines = [f"# {title}", "", f"OpenAPI tag `{tag}`: {len(ops)} operations.", ""]
        for path, method, op in ops:
            lines += operation(path, method, op)
        pages[name] = "\n".join(lines)
    index += ["", "Every body is described under [Schemas](schemas.md)."]
    pages["reference/index.md"] = "\n".join(index) + "\n"
    pages["reference/schemas.md"] = schema_page(doc["components"]["schemas"])
    pages["reference/openapi.json"] = json.dumps(doc, indent=2)
    return pages


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    _pages.clear()
    _pages.update(build_pages(document()))
    entries: list[Any] = ["reference/index.md"]
    for name, text in _pages.items():
        if name.endswith(".md") and name != "reference/index.md":
            entries.append({text.splitlines()[0].removeprefix("# "): name})
    nav = config.nav or []
    for i, item in enumerate(nav):
        if isinstance(item, dict) and item.get("API reference") == "reference/index.md":
            nav[i] = {"API reference": entries}
    return config


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for name, text in _pages.items():
        files.append(File.generated(config, name, content=text))
    return files
