"""What the replaced systems' APIs (``inferd.http.compat``) answer, as pydantic models: the
OpenAPI document's response schemas. They describe the dicts the routes build; nothing builds
answers from them."""

from __future__ import annotations

from typing import Literal

from inferd.jsontypes import JsonObject
from inferd.schemas.answers import Answer


class Context(Answer):
    """The contexts-and-results API's stored prompt."""

    id: int
    content: str
    created_at: int


class ContextResult(Answer):
    """The contexts-and-results API's result: a job seen as ``pending`` → ``completed`` |
    ``failed``."""

    id: str
    result_id: str
    context_id: int | None
    model: str | None
    status: Literal["pending", "completed", "failed"]
    content: str | None
    error: str | None
    created_at: int
    finished_at: int | None


class RepositoryModel(Answer):
    """The contexts-and-results API's model list entry (Triton's repository index)."""

    name: str
    version: str
    state: Literal["READY", "UNAVAILABLE"]


class GeneratedContent(Answer):
    """The queued generate API's answer."""

    content: str | None


class GeneratedKey(Answer):
    """The proxy toolkit's ``/generate_api_key`` answer."""

    api_key: str
    id: int | str
    enabled: bool


class KeyRevoked(Answer):
    """The proxy toolkit's ``/delete_api_key`` answer."""

    message: str


class HostInitialized(Answer):
    """The model-host API's ``/old/initialize`` answer."""

    status: Literal["initialized"]
    model: str
    params: JsonObject


class HostGenerated(Answer):
    """The model-host API's ``/old/generate`` answer."""

    response: str | None
    model: str
    usage: JsonObject | None


class HostStatus(Answer):
    """The model-host API's ``/old/status`` answer."""

    status: Literal["loaded", "not_initialized"]
    model: str | None
    params: JsonObject
    default_model: str | None
    models: list[str]
    initialized_at: float | None
