"""Wire models of ``/v1/rerank`` (the Cohere/Jina shape vLLM and llama.cpp's server serve) and
``/v1/score`` (vLLM's)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from inferd.jsontypes import JsonObject
from inferd.schemas.openai import ModelName


class RerankRequest(BaseModel):
    """``POST /v1/rerank``: order ``documents`` by relevance to ``query``."""

    model_config = ConfigDict(extra="allow")
    model: ModelName
    query: str
    documents: list[str | JsonObject] = Field(min_length=1, max_length=1000)
    top_n: int | None = Field(default=None, ge=1)
    return_documents: bool = True

    @field_validator("documents")
    @classmethod
    def _texts(cls, v: list[str | JsonObject]) -> list[str | JsonObject]:
        for document in v:
            if isinstance(document, dict) and not isinstance(document.get("text"), str):
                raise ValueError("a document must be a string or an object with 'text'")
        return v

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else str(d["text"]) for d in self.documents]


class ScoreRequest(BaseModel):
    """``POST /v1/score``: a score per pair of texts (one ``text_1`` against every ``text_2``,
    or two lists of the same length, pair by pair)."""

    model_config = ConfigDict(extra="allow")
    model: ModelName
    text_1: str | list[str]
    text_2: str | list[str]

    def pairs(self) -> list[tuple[str, str]]:
        firsts = [self.text_1] if isinstance(self.text_1, str) else list(self.text_1)
        seconds = [self.text_2] if isinstance(self.text_2, str) else list(self.text_2)
        if not firsts or not seconds:
            raise ValueError("text_1 and text_2 must not be empty")
        if len(firsts) == 1:
            return [(firsts[0], s) for s in seconds]
        if len(firsts) != len(seconds):
            raise ValueError("text_1 and text_2 must have the same length (or text_1 one text)")
        return list(zip(firsts, seconds, strict=True))
