"""Requests inferd passes through to ``http`` replicas as they are: audio (transcriptions,
speech) and moderations. Only the model name is read and rewritten."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from inferd.jsontypes import JsonObject
from inferd.schemas.answers import Usage
from inferd.schemas.openai import ModelName

# OpenAI path (under /v1) -> the capability a replica declares for it
CAPABILITIES = {"/audio/transcriptions": "audio.transcriptions",
                "/audio/speech": "audio.speech", "/moderations": "moderations"}


class FormField(BaseModel):
    """One field of a multipart form (a file when ``filename`` is set)."""

    name: str
    value: bytes
    filename: str | None = None
    content_type: str | None = None


class Forward(BaseModel):
    """One request to pass through: a JSON body or a multipart form."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    path: str
    model: ModelName
    json_body: JsonObject | None = None  # as the client sent it
    form: list[FormField] | None = None

    @property
    def capability(self) -> str:
        return CAPABILITIES[self.path]


class Forwarded(BaseModel):
    """What the replica answered."""

    body: bytes
    content_type: str
    usage: Usage | None = None  # what it reported, when an OpenAI usage (metered by it)


class ModerationRequest(BaseModel):
    """``POST /v1/moderations`` as the route checks it (the rest goes to the replica as sent):
    an ``input``, and a model name or none (the first moderation model)."""

    model_config = ConfigDict(extra="allow")
    input: Any
    model: str | None = None


class SpeechRequest(BaseModel):
    """``POST /v1/audio/speech`` as the route checks it: a model and the text to speak."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    input: str = Field(min_length=1)
