"""``/v1/files``: upload batch input (JSONL), read files back (batch output and error files)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.datastructures import UploadFile
from starlette.responses import Response

from inferd.errors import InvalidRequest, PayloadTooLarge
from inferd.http.deps import PrincipalDep, ServicesDep
from inferd.http.jobs import JobsDep
from inferd.http.operation import endpoint
from inferd.http.responses import json_response, page_response
from inferd.jobs.batches import file_object
from inferd.schemas import answers as a

router = APIRouter(tags=["batch"])


@endpoint(router, "POST", "/v1/files", access="key", answer=a.File, form=("file", "purpose"),
          errors=(413, 503))
async def upload_file(request: Request, jobs: JobsDep, services: ServicesDep,
                      principal: PrincipalDep) -> Response:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequest("Upload the file as multipart/form-data with the fields "
                             "'file' and 'purpose'.", param="file")
    # a key whose storage is full is refused before its upload is read
    await services.control.storage.check_room(principal.key_id, principal.storage_quota)
    limit = services.settings.http.max_file_bytes
    async with request.form(max_part_size=limit) as form:
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("Missing required parameter: 'file'.", param="file",
                                 code="missing_required_parameter")
        if not isinstance(purpose, str) or not purpose:
            raise InvalidRequest("Missing required parameter: 'purpose'.", param="purpose",
                                 code="missing_required_parameter")
        content = await upload.read(limit + 1)
        if len(content) > limit:
            raise PayloadTooLarge(f"The file is larger than the limit of {limit} bytes.")
        record = await jobs.batches.upload(principal, upload.filename or "", purpose, content)
    return json_response(file_object(record))


@endpoint(router, "GET", "/v1/files", access="owner", answer=a.FileList, errors=(503,))
async def list_files(jobs: JobsDep, principal: PrincipalDep, purpose: str | None = None,
                     after: str | None = None,
                     limit: Annotated[int, Query(ge=1, le=10000)] = 100) -> Response:
    records, has_more = await jobs.batches.files.page(
        owner=principal.key_id, all_owners=principal.is_admin, purpose=purpose, after=after,
        limit=limit)
    data = [file_object(r) for r in records]
    return page_response(data, has_more)


@endpoint(router, "GET", "/v1/files/{file_id}", access="owner", answer=a.File, errors=(404, 503))
async def retrieve_file(file_id: str, jobs: JobsDep, principal: PrincipalDep) -> Response:
    return json_response(file_object(await jobs.batches.file(principal, file_id)))


@endpoint(router, "GET", "/v1/files/{file_id}/content", access="owner",
          media=("application/jsonl", "application/octet-stream"), errors=(404, 503))
async def file_content(file_id: str, jobs: JobsDep, principal: PrincipalDep) -> Response:
    record = await jobs.batches.file(principal, file_id)
    content = await jobs.batches.files.content(record.id)
    return Response(content, media_type="application/jsonl" if record.purpose != "user_data"
                    else "application/octet-stream")


@endpoint(router, "DELETE", "/v1/files/{file_id}", access="owner", answer=a.Deleted,
          errors=(404, 503))
async def delete_file(file_id: str, jobs: JobsDep, principal: PrincipalDep) -> Response:
    record = await jobs.batches.file(principal, file_id)
    await jobs.batches.files.delete(record.id)
    return json_response({"id": file_id, "object": "file", "deleted": True})
