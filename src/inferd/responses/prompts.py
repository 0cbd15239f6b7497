"""Stored prompt templates (Responses' ``prompt``): managed by admins
(``/admin/v1/prompts``), used by the key each belongs to.

A version holds ``instructions`` and ``input`` messages; ``{{name}}`` anywhere in their text is
replaced by the request's variable ``name`` (a string, or an ``input_text`` part). A variable
the template uses that the request does not give is a 400; versions never change once made.
"""

from __future__ import annotations

import re
import time
from typing import Literal, NotRequired, TypedDict

from inferd.audit import AuditLog
from inferd.auth.principal import Principal
from inferd.errors import InvalidRequest, NotFound
from inferd.jsontypes import JsonObject, JsonValue
from inferd.schemas.responses import (
    Deleted,
    Item,
    PromptCreate,
    PromptRef,
    PromptTemplate,
    items_to_messages,
    new_id,
)
from inferd.store.conversations import PromptRecord, PromptStore, Template

VARIABLE = re.compile(r"\{\{\s*([A-Za-z0-9_.-]{1,64})\s*\}\}")
MAX_VERSIONS = 1000  # per prompt: a template's history is bounded


class PromptVersion(TypedDict):
    version: str
    created_at: int
    instructions: NotRequired[str]
    input: NotRequired[list[JsonObject]]
    variables: list[str]


class Prompt(TypedDict):
    """A prompt as the admin API shows it: its latest version, and every version."""

    id: str
    object: Literal["prompt"]
    name: str
    key_id: str | None
    created_at: int
    version: str
    instructions: NotRequired[str]
    input: NotRequired[list[JsonObject]]
    variables: list[str]
    versions: list[PromptVersion]


class PromptList(TypedDict):
    object: Literal["list"]
    data: list[Prompt]


def template_variables(template: Template) -> list[str]:
    """The variables a template uses, in order of first use."""
    found: dict[str, None] = {}

    def scan(value: object) -> None:
        if isinstance(value, str):
            found.update(dict.fromkeys(VARIABLE.findall(value)))
        elif isinstance(value, dict):
            for inner in value.values():
                scan(inner)
        elif isinstance(value, list):
            for inner in value:
                scan(inner)

    scan(template)
    return list(found)


def _variable_text(name: str, value: str | JsonObject) -> str:
    if isinstance(value, str):
        return value
    text = value.get("text")
    if value.get("type") == "input_text" and isinstance(text, str):
        return text
    raise InvalidRequest("A prompt variable is a string or an input_text part.",
                         param=f"prompt.variables.{name}", code="unsupported_variable")


def render(template: Template,
           variables: dict[str, str | JsonObject]) -> tuple[str | None, list[Item]]:
    """The template's instructions and input items with its variables filled in."""
    values = {name: _variable_text(name, value) for name, value in variables.items()}
    missing = [name for name in template_variables(template) if name not in values]
    if missing:
        raise InvalidRequest(f"The prompt's variable '{missing[0]}' is not given.",
                             param="prompt.variables", code="missing_variable")

    def fill_text(text: str) -> str:
        return VARIABLE.sub(lambda m: values[m.group(1)], text)

    def fill_object(value: JsonObject) -> JsonObject:
        return {key: fill(inner) for key, inner in value.items()}

    def fill(value: JsonValue) -> JsonValue:
        if isinstance(value, str):
            return fill_text(value)
        if isinstance(value, dict):
            return fill_object(value)
        if isinstance(value, list):
            return [fill(inner) for inner in value]
        return value

    instructions = template.get("instructions")
    return (None if instructions is None else fill_text(instructions),
            [fill_object(item) for item in template.get("input") or []])


def _checked(template: PromptTemplate) -> Template:
    body: Template = {}
    if template.instructions is not None:
        body["instructions"] = template.instructions
    if template.input is not None:
        body["input"] = [dict(item) for item in template.input]
    items_to_messages(body.get("input") or [])  # the kinds of items a chat model reads
    return body


class PromptService:
    """The admin API's prompts, and a response's ``prompt`` resolved for its caller."""

    def __init__(self, store: PromptStore, *, audit: AuditLog | None = None) -> None:
        self.store = store
        self.audit = audit  # records every change (``inferd.audit``)

    async def _record(self, action: str, prompt_id: str, before: Prompt | None,
                      after: Prompt | None) -> None:
        if self.audit is not None:
            await self.audit.record(action, "prompt", prompt_id, before=before, after=after)

    def _object(self, record: PromptRecord, versions: list[tuple[int, Template, float]]
                ) -> Prompt:
        empty: Template = {}
        latest = next((t for v, t, _ in versions if v == record.latest_version), empty)
        return {"id": record.id, "object": "prompt", "name": record.name,
                "key_id": record.owner, "created_at": int(record.created_at),
                "version": str(record.latest_version), **latest,
                "variables": template_variables(latest),
                "versions": [{"version": str(v), "created_at": int(c), **t,
                              "variables": template_variables(t)} for v, t, c in versions]}

    async def create(self, principal: Principal, body: PromptCreate) -> Prompt:
        template = _checked(body)
        owner = str(body.key_id) if body.key_id is not None else principal.key_id
        record = PromptRecord(new_id("pmpt"), owner, body.name, time.time(), 1)
        await self.store.create(record, template)
        view = self._object(record, [(1, template, record.created_at)])
        await self._record("prompt.create", record.id, None, view)
        return view

    async def _get(self, prompt_id: str) -> PromptRecord:
        record = await self.store.get(prompt_id)
        if record is None:
            raise NotFound(f"No prompt with id '{prompt_id}'.", param="prompt_id",
                           code="prompt_not_found")
        return record

    async def retrieve(self, prompt_id: str) -> Prompt:
        record = await self._get(prompt_id)
        return self._object(record, await self.store.versions(record.id))

    async def list_prompts(self, limit: int) -> PromptList:
        data = []
        for record in await self.store.latest(limit):
            data.append(self._object(record, await self.store.versions(record.id)))
        return {"object": "list", "data": data}

    async def add_version(self, prompt_id: str, body: PromptTemplate) -> Prompt:
        template = _checked(body)
        record = await self._get(prompt_id)
        if record.latest_version >= MAX_VERSIONS:
            raise InvalidRequest(f"A prompt has at most {MAX_VERSIONS} versions; create a new "
                                 "prompt.", param="prompt_id", code="too_many_versions")
        before = self._object(record, await self.store.versions(record.id)) \
            if self.audit is not None else None
        if await self.store.add_version(prompt_id, template) is None:
            raise NotFound(f"No prompt with id '{prompt_id}'.", param="prompt_id",
                           code="prompt_not_found")
        view = await self.retrieve(prompt_id)
        await self._record("prompt.version", prompt_id, before, view)
        return view

    async def delete(self, prompt_id: str) -> Deleted:
        before = await self.retrieve(prompt_id) if self.audit is not None else None
        if not await self.store.delete(prompt_id):
            raise NotFound(f"No prompt with id '{prompt_id}'.", param="prompt_id",
                           code="prompt_not_found")
        await self._record("prompt.delete", prompt_id, before, None)
        return {"id": prompt_id, "object": "prompt.deleted", "deleted": True}

    async def resolve(self, principal: Principal,
                      ref: PromptRef) -> tuple[str | None, list[Item], str]:
        """The instructions and items of the caller's own prompt, and the version used."""
        record = await self.store.get(ref.id)
        if record is None or record.owner != principal.key_id:
            raise NotFound(f"No prompt with id '{ref.id}'.", param="prompt.id",
                           code="prompt_not_found")
        version = int(ref.version) if ref.version is not None else record.latest_version
        template = await self.store.version(record.id, version)
        if template is None:
            raise NotFound(f"The prompt has no version '{ref.version}'.",
                           param="prompt.version", code="prompt_version_not_found")
        instructions, items = render(template, dict(ref.variables or {}))
        return instructions, items, str(version)
