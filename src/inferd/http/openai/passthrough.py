"""``/v1/audio/transcriptions``, ``/v1/audio/speech`` and ``/v1/moderations``: passed through
to ``http`` replicas that declare the capability (``audio.transcriptions``, ``audio.speech``,
``moderations``)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile
from starlette.responses import Response

from inferd.errors import InvalidRequest
from inferd.http.deps import PrincipalDep, ServicesDep, unless_disconnected
from inferd.http.operation import INFER, TEXT, endpoint
from inferd.jsontypes import JsonObject
from inferd.passthrough import model_for
from inferd.schemas import answers as a
from inferd.schemas.passthrough import FormField, Forward, ModerationRequest, SpeechRequest
from inferd.services import Services

router = APIRouter(tags=["openai"])


async def _json(request: Request) -> JsonObject:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise InvalidRequest("The body is not valid JSON.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.", code="invalid_json")
    return body


async def _send(request: Request, services: Services, principal: Any,
                forward: Forward) -> Response:
    answer = await unless_disconnected(request, services.inference.forward(forward, principal))
    return Response(answer.body, media_type=answer.content_type)


@endpoint(router, "POST", "/v1/moderations", access="key", answer=a.ModerationList,
          body=ModerationRequest, errors=(*INFER, 413))
async def moderations(request: Request, services: ServicesDep,
                      principal: PrincipalDep) -> Response:
    body = await _json(request)
    if "input" not in body:
        raise InvalidRequest("Missing required parameter: 'input'.", param="input")
    model = model_for(services.router, "/moderations", _name(body.get("model")))
    return await _send(request, services, principal,
                       Forward(path="/moderations", model=model, json_body=body))


@endpoint(router, "POST", "/v1/audio/speech", access="key", body=SpeechRequest,
          media=("audio/*", "application/octet-stream"), errors=(*INFER, 413))
async def speech(request: Request, services: ServicesDep, principal: PrincipalDep) -> Response:
    body = await _json(request)
    for name in ("model", "input"):
        if not isinstance(body.get(name), str) or not body[name]:
            raise InvalidRequest(f"Missing required parameter: '{name}'.", param=name)
    model = model_for(services.router, "/audio/speech", str(body["model"]))
    return await _send(request, services, principal,
                       Forward(path="/audio/speech", model=model, json_body=body))


@endpoint(router, "POST", "/v1/audio/transcriptions", access="key", answer=a.Transcription,
          form=("file",), form_optional=("model", "response_format"), media=(TEXT,),
          errors=(*INFER, 413))
async def transcriptions(request: Request, services: ServicesDep,
                         principal: PrincipalDep) -> Response:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequest("Send the audio as multipart/form-data.", param="file")
    fields: list[FormField] = []
    async with request.form() as form:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                fields.append(FormField(name=name, value=await value.read(),
                                        filename=value.filename or "audio",
                                        content_type=value.content_type))
            else:
                fields.append(FormField(name=name, value=value.encode()))
    if not any(f.name == "file" and f.filename for f in fields):
        raise InvalidRequest("Missing required parameter: 'file'.", param="file")
    requested = next((f.value.decode() for f in fields if f.name == "model"), None)
    model = model_for(services.router, "/audio/transcriptions", requested)
    return await _send(request, services, principal,
                       Forward(path="/audio/transcriptions", model=model, form=fields))


def _name(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest("'model' must be a string.", param="model")
    return value
