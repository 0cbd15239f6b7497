"""The image-generating LLM backend's ``POST /model/generate``: ``{"text": ...}`` in, PNG bytes
out, on the image service."""

from __future__ import annotations

import base64

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from inferd.errors import UpstreamError
from inferd.http.deps import PrincipalDep, read_model, unless_disconnected
from inferd.http.images import ImagesDep
from inferd.http.operation import INFER, endpoint
from inferd.schemas.images import ImageGenerationRequest

router = APIRouter(tags=["image-backend"])


class BackendImageRequest(BaseModel):
    """The image backend's request: the prompt as ``text`` (a model and size may be added)."""

    model_config = ConfigDict(extra="ignore")
    text: str = Field(min_length=1, max_length=32000)
    model: str = ""
    size: str | None = None
    seed: int | None = None


@endpoint(router, "POST", "/model/generate", access="key", body=BackendImageRequest,
          media=("image/png",), errors=(*INFER, 409, 413))
async def backend_generate(request: Request, images: ImagesDep,
                           principal: PrincipalDep) -> Response:
    spec = await read_model(request, BackendImageRequest)
    body = ImageGenerationRequest(prompt=spec.text, model=spec.model, size=spec.size,
                                  seed=spec.seed, output_format="png")
    result = await unless_disconnected(request, images.generate(body, principal))
    encoded = result.data[0].b64_json if result.data else None
    if encoded is None:  # asked as b64_json: a replica's fault
        raise UpstreamError(f"The model '{body.model}' answered no picture.")
    return Response(base64.b64decode(encoded), media_type="image/png")
