"""``/v1/images/generations`` (OpenAI's image API; ``Prefer: respond-async`` makes it a job)
and ``GET /v1/images/{id}/content`` (pictures answered by URL)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from inferd.http.deps import PrincipalDep, ServicesDep, read_model, unless_disconnected
from inferd.http.fast import Answered
from inferd.http.jobs import answer as submit_job
from inferd.http.jobs import get_jobs, wants_async
from inferd.http.operation import INFER, endpoint
from inferd.http.responses import answer_response
from inferd.images import ENDPOINT, ImageService
from inferd.schemas import answers as a
from inferd.schemas.images import ImageGenerationRequest

router = APIRouter(tags=["images"])


def get_images(services: ServicesDep) -> ImageService:
    return get_jobs(services).images


ImagesDep = Annotated[ImageService, Depends(get_images)]


@endpoint(router, "POST", ENDPOINT, access="key", answer=a.ImagesAnswer,
          body=ImageGenerationRequest, errors=(*INFER, 409, 413), job=True)
async def create_image(request: Request, services: ServicesDep, images: ImagesDep,
                       principal: PrincipalDep) -> Response:
    if wants_async(request.scope):  # Prefer: respond-async -> 202 with a durable job
        return Answered(submit_job)
    body = await read_model(request, ImageGenerationRequest)
    # a client that leaves stops the generation at its next step
    result = await unless_disconnected(request, images.generate(body, principal))
    base = str(request.base_url).rstrip("/")
    for item in result.data:
        if item.url is not None and item.url.startswith("/"):  # inferd's own: absolute
            item.url = base + item.url
    return answer_response(result)


@endpoint(router, "GET", "/v1/images/{image_id}/content", access="private",
          media=("image/png", "image/jpeg", "image/webp"), errors=(404,))
async def image_content(image_id: str, images: ImagesDep, principal: PrincipalDep) -> Response:
    content, media_type = await images.content(principal, image_id)
    return Response(content, media_type=media_type,
                    headers={"Cache-Control": "private, max-age=86400"})

