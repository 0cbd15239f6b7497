"""Image generation: what ``/v1/images/generations``, ``/model/generate`` and image jobs share.

``ImageService.generate`` picks the model (the first one that makes images when the request
names none), runs the request through ``Inference`` (allow-list, rpm and ipm limits, router
retries and fallbacks, metering) with engines always asked for ``b64_json``, and for
``response_format: url`` stores each picture as a file of the calling key (kept as long as
job results are kept) and answers ``/v1/images/{id}/content`` URLs instead.
"""

from __future__ import annotations

import base64
import time

from inferd.auth.principal import Principal
from inferd.engines.base import Progress
from inferd.errors import InvalidRequest, NotFound
from inferd.ids import new_id
from inferd.inference import Inference
from inferd.routing.router import Router
from inferd.schemas.answers import ImagesAnswer
from inferd.schemas.images import IMAGE_FORMATS, ImageGenerationRequest
from inferd.store.files import IMAGE_PURPOSE, FileRecord, FileStore
from inferd.store.storage import StorageStore

ENDPOINT = "/v1/images/generations"


def default_image_model(router: Router) -> str:
    """The model an images request without ``model`` goes to: the first that makes images."""
    for info in router.models():
        if "images" in info.capabilities:
            return info.name
    raise InvalidRequest("No model that generates images is served here.", param="model",
                         code="model_not_found")


def content_url(image_id: str) -> str:
    return f"/v1/images/{image_id}/content"


class ImageService:
    """Generates images through ``Inference`` and keeps the ones answered by URL."""

    def __init__(self, inference: Inference, files: FileStore,
                 retention_seconds: float) -> None:
        self.inference = inference
        self.files = files
        self.retention_seconds = retention_seconds

    def with_model(self, request: ImageGenerationRequest) -> ImageGenerationRequest:
        if request.model:
            return request
        return request.model_copy(update={"model": default_image_model(self.inference.router)})

    async def generate(self, request: ImageGenerationRequest, principal: Principal,
                       progress: Progress | None = None) -> ImagesAnswer:
        request = self.with_model(request)
        asked = request.response_format or "b64_json"
        engine_request = request.model_copy(update={"response_format": "b64_json"})
        if request.response_format is None:  # not sent: an http replica sees it unset too
            engine_request.model_fields_set.discard("response_format")
        if asked == "url":  # kept: refused before it runs when the key's storage is full
            await StorageStore(self.files.db).check_room(principal.key_id,
                                                         principal.storage_quota,
                                                         count=request.n)
        result = await self.inference.images(engine_request, principal, progress)
        if asked == "url":
            await self._store(result, request.output_format, principal)
        return result

    async def _store(self, result: ImagesAnswer, output_format: str,
                     principal: Principal) -> None:
        """Replace each ``b64_json`` by the URL of a stored copy owned by ``principal``."""
        fmt = result.output_format or output_format
        now = time.time()
        for item in result.data:
            encoded = item.b64_json
            item.unset("b64_json")
            if encoded is None:
                continue  # an upstream answered a URL of its own: passed on as it is
            content = base64.b64decode(encoded)
            image_id = new_id("img")
            await self.files.insert(FileRecord(
                id=image_id, owner=principal.key_id, purpose=IMAGE_PURPOSE,
                filename=f"{image_id}.{fmt if fmt in IMAGE_FORMATS else 'png'}",
                bytes=len(content), created_at=now,
                expires_at=now + self.retention_seconds), content)
            item.url = content_url(image_id)

    async def content(self, principal: Principal, image_id: str) -> tuple[bytes, str]:
        """A stored picture and its media type; 404 for anyone but the key that made it."""
        record = await self.files.get(image_id)
        if (record is None or record.purpose != IMAGE_PURPOSE or record.owner != principal.key_id
                or (record.expires_at is not None and record.expires_at < time.time())):
            raise NotFound(f"No image with id '{image_id}'.", param="image_id",
                           code="image_not_found")
        extension = record.filename.rsplit(".", 1)[-1]
        return await self.files.content(image_id), IMAGE_FORMATS.get(extension, "image/png")
