"""Which model answers a passed-through request (audio, moderations), with OpenAI's errors:
404 ``model_not_found`` when no model serves it at all, 400 when the named model does not."""

from __future__ import annotations

from inferd.errors import InvalidRequest, NotFound
from inferd.routing.router import Router
from inferd.schemas.passthrough import CAPABILITIES


def model_for(router: Router, path: str, requested: str | None) -> str:
    """The model to send ``path`` to: the one asked for, else the first that serves it."""
    capability = CAPABILITIES[path]
    serving = router.serving(capability)
    if requested:
        name = router.resolve(requested)  # an unknown model: 404 model_not_found
        if name not in serving:
            raise InvalidRequest(f"The model '{requested}' does not serve /v1{path}.",
                                 param="model", code="unsupported_model_operation")
        return requested
    if not serving:
        raise NotFound(f"No model on this server serves /v1{path} (a replica declares it "
                       f"with the capability '{capability}').", param="model",
                       code="model_not_found")
    return serving[0]
