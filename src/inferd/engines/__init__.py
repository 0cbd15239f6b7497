"""Engines: what runs a model. ``build_engine`` makes the right one for a model spec.

The in-process engines need runtimes the base install lacks: each comes with an extra of inferd
(``pip install 'inferd[llamacpp]'``). Their modules are imported only when such a model is
built, and a model whose runtime is missing is refused with the extra to install.
"""

from __future__ import annotations

import importlib.util

from inferd.engines.base import Engine
from inferd.engines.residency import Residency
from inferd.errors import EngineNotInstalled
from inferd.settings import ModelSpec

# kind -> (the extra that installs its runtime, [(module, package)] that runtime needs)
RUNTIMES: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "llamacpp": ("llamacpp", [("llama_cpp", "llama-cpp-python")]),
    "embeddings": ("embeddings", [("torch", "torch"), ("transformers", "transformers")]),
    "diffusers": ("images", [("torch", "torch"), ("transformers", "transformers"),
                             ("diffusers", "diffusers")]),
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # in sys.modules without a spec: it is there
        return True


def missing_runtime(spec: ModelSpec) -> EngineNotInstalled | None:
    """Why ``spec`` cannot run in this install (its extra is not installed), or None."""
    return missing_kind(spec.kind, spec.name)


def missing_kind(kind: str, model: str) -> EngineNotInstalled | None:
    """Why a model ``model`` of ``kind`` cannot run in this install, or None."""
    extra, modules = RUNTIMES.get(kind, ("", []))
    for module, package in modules:
        if not _installed(module):
            return EngineNotInstalled(model, package, extra)
    return None


def build_engine(spec: ModelSpec, residency: Residency | None = None) -> Engine:
    """The local engine for ``spec`` (imports heavy runtimes only when needed); a model that
    loads and unloads (llama.cpp's) counts against ``residency``, the process's budget."""
    missing = missing_runtime(spec)
    if missing is not None:
        raise missing
    if spec.kind == "llamacpp":
        from inferd.engines.llamacpp import LlamaCppEngine

        return LlamaCppEngine(spec, residency)
    if spec.kind == "embeddings":
        from inferd.engines.embeddings import SentenceEmbeddingEngine

        return SentenceEmbeddingEngine(spec)
    if spec.kind == "diffusers":
        from inferd.engines.diffusers import DiffusersEngine

        return DiffusersEngine(spec)
    from inferd.engines.echo import EchoEngine

    return EchoEngine(spec)
