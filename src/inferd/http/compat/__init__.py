"""The replaced systems' APIs, mapped onto the core; one module per system:

- ``contexts_results``: the contexts-and-results API (stored prompts, their results as
  jobs), on the job system;
- ``queued_generate``: the queued generate API (protollm's ``/generate``,
  ``/chat_completion``), on the job system;
- ``image_backend``: the image-generating LLM backend's ``/model/generate``, on the image
  service;
- ``proxy_toolkit``: the proxy toolkit's keys, models and replicas;
- ``model_host``: the model-host API (``/old/*``), on the router.

The helpers here are shared by the APIs that run chats (contexts-and-results, queued generate and
model host).
"""

from __future__ import annotations

from inferd.auth.principal import Principal
from inferd.control import JobRecord
from inferd.errors import ModelNotFound, Unavailable
from inferd.inference import Inference
from inferd.routing.router import Router


def default_chat_model(inference: Inference, principal: Principal) -> str:
    """The first model that chats and that the caller's key may use: what a replaced system's
    request without a known model runs on."""
    for info in inference.visible_models(principal):
        if "chat" in info.capabilities:
            return info.name
    raise Unavailable("No chat model this key may use is being served.")


def serves_chat(router: Router, name: str) -> bool:
    """Whether the model ``name`` (canonical) has a replica that chats."""
    return name in router.serving("chat")


def chat_model(inference: Inference, name: str | None,
               principal: Principal) -> str:
    """``name`` when it is served, else the caller's default chat model (the replaced systems
    named models that are not served here)."""
    if name:
        try:
            return inference.router.resolve(name)
        except ModelNotFound:
            pass
    return default_chat_model(inference, principal)


def context_length(router: Router, model: str) -> int | None:
    return next((m.context_length for m in router.models() if m.name == model), None)


def token_limit(router: Router, model: str, limit: int | None) -> int | None:
    """A token limit as an upper bound: one the model's context cannot hold means "as many as
    fit" rather than an error."""
    size = context_length(router, model)
    if limit is None or (size is not None and limit >= size):
        return None
    return limit


def result_text(job: JobRecord) -> str | None:
    """The generated text of a finished chat or completion job."""
    choices = job.result.get("choices") if job.result else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    choice = choices[0]
    if "message" in choice:
        message = choice["message"]
        return str((message.get("content") if isinstance(message, dict) else None) or "")
    return str(choice.get("text") or "")
