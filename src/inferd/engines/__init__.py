"""Engines: what runs a model. ``build_engine`` makes the right one for a model spec."""

from __future__ import annotations

from inferd.engines.base import Engine
from inferd.settings import ModelSpec


def build_engine(spec: ModelSpec) -> Engine:
    """The local engine for ``spec`` (imports heavy runtimes only when needed)."""
    if spec.kind == "llamacpp":
        from inferd.engines.llamacpp import LlamaCppEngine

        return LlamaCppEngine(spec)
    if spec.kind == "embeddings":
        from inferd.engines.embeddings import SentenceEmbeddingEngine

        return SentenceEmbeddingEngine(spec)
    if spec.kind == "diffusers":
        from inferd.engines.diffusers import DiffusersEngine

        return DiffusersEngine(spec)
    from inferd.engines.echo import EchoEngine

    return EchoEngine(spec)
