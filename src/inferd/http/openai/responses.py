"""``/v1/responses`` and ``/v1/conversations``: the Responses and Conversations APIs (thin
routes; the logic is ``inferd.responses``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import Response

from inferd.errors import InferdError
from inferd.http.deps import PrincipalDep, ServicesDep, read_strict, unless_disconnected
from inferd.http.operation import INFER, SSE, endpoint
from inferd.http.responses import json_response
from inferd.http.sse import sse_response
from inferd.jsontypes import JsonObject
from inferd.responses.conversations import ConversationService
from inferd.responses.events import Event
from inferd.responses.service import ResponseService
from inferd.schemas import answers as a
from inferd.schemas.responses import (
    ConversationCreate,
    ConversationItemsCreate,
    ConversationUpdate,
    InputTokensRequest,
    ResponseCreateRequest,
)

router = APIRouter(tags=["responses"])


async def _service(services: ServicesDep) -> ResponseService:
    return services.control.responses


async def _conversations(services: ServicesDep) -> ConversationService:
    return services.control.conversations


ResponsesDep = Annotated[ResponseService, Depends(_service)]
ConversationsDep = Annotated[ConversationService, Depends(_conversations)]
ResponseId = Annotated[str, Path(min_length=1, max_length=64)]
ConversationId = Annotated[str, Path(min_length=1, max_length=64)]
ItemId = Annotated[str, Path(min_length=1, max_length=64)]


async def _sse(events: AsyncIterator[Event | JsonObject]) -> AsyncIterator[bytes]:
    """``event: <type>`` + ``data: <json>`` per event, as OpenAI sends them."""
    try:
        async for event in events:  # sse_response closes this generator, and it ``events``
            yield (b"event: " + str(event.get("type", "")).encode() + b"\ndata: "
                   + orjson.dumps(event) + b"\n\n")
    except InferdError as exc:  # after the stream began: an ``error`` event ends it
        error = exc.to_dict()
        yield b"event: error\ndata: " + orjson.dumps({"type": "error", **error}) + b"\n\n"
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


# ``private``: ``previous_response_id`` is the caller's own
@endpoint(router, "POST", "/v1/responses", access="private", answer=a.ResponseObject,
          body=ResponseCreateRequest, media=(SSE,), errors=(*INFER, 409, 413))
async def create_response(request: Request, principal: PrincipalDep,
                          responses: ResponsesDep) -> Response:
    body = await read_strict(request, ResponseCreateRequest)
    prepared = await responses.prepare(principal, body)
    if body.background:
        created = await responses.create_background(principal, prepared)
        if body.stream:
            return sse_response(_sse(await responses.follow(principal, str(created["id"]))))
        return json_response(created)
    if body.stream:
        return sse_response(_sse(await responses.create_stream(principal, prepared)))
    return json_response(await unless_disconnected(request,
                                                   responses.create(principal, prepared)))


# ``private``: ``previous_response_id`` as above
@endpoint(router, "POST", "/v1/responses/input_tokens", access="private", answer=a.InputTokens,
          body=InputTokensRequest, errors=(403, 404, 413, 503))
async def count_input_tokens(request: Request, principal: PrincipalDep,
                             responses: ResponsesDep) -> Response:
    body = await read_strict(request, InputTokensRequest)
    return json_response(await responses.count_input_tokens(principal, body))


@endpoint(router, "GET", "/v1/responses/{response_id}", access="private", answer=a.ResponseObject,
          media=(SSE,), errors=(404, 503))
async def get_response(response_id: ResponseId, principal: PrincipalDep,
                       responses: ResponsesDep, stream: bool = False,
                       starting_after: Annotated[int | None, Query(ge=0)] = None) -> Response:
    if stream:
        events = await responses.follow(principal, response_id, starting_after)
        return sse_response(_sse(events))
    return json_response(await responses.retrieve(principal, response_id))


@endpoint(router, "POST", "/v1/responses/{response_id}/cancel", access="private",
          answer=a.ResponseObject, errors=(404, 409, 503))
async def cancel_response(response_id: ResponseId, principal: PrincipalDep,
                          responses: ResponsesDep) -> Response:
    return json_response(await responses.cancel(principal, response_id))


@endpoint(router, "DELETE", "/v1/responses/{response_id}", access="private", answer=a.Deleted,
          errors=(404, 409, 503))
async def delete_response(response_id: ResponseId, principal: PrincipalDep,
                          responses: ResponsesDep) -> Response:
    return json_response(await responses.delete(principal, response_id))


@endpoint(router, "GET", "/v1/responses/{response_id}/input_items", access="private",
          answer=a.ItemList, errors=(404, 503))
async def list_input_items(response_id: ResponseId, principal: PrincipalDep,
                           responses: ResponsesDep,
                           limit: Annotated[int, Query(ge=1, le=100)] = 20,
                           order: Literal["asc", "desc"] = "desc",
                           after: str | None = None) -> Response:
    page = await responses.input_items(principal, response_id, limit=limit, order=order,
                                       after=after)
    return json_response(page)


# -- the Conversations API ---------------------------------------------------------------------
@endpoint(router, "POST", "/v1/conversations", access="key", answer=a.Conversation,
          body=ConversationCreate, errors=(413, 503))
async def create_conversation(request: Request, principal: PrincipalDep,
                              conversations: ConversationsDep) -> Response:
    body = await read_strict(request, ConversationCreate)
    return json_response(await conversations.create(principal, body))


@endpoint(router, "GET", "/v1/conversations/{conversation_id}", access="private",
          answer=a.Conversation, errors=(404, 503))
async def get_conversation(conversation_id: ConversationId, principal: PrincipalDep,
                           conversations: ConversationsDep) -> Response:
    return json_response(await conversations.retrieve(principal, conversation_id))


@endpoint(router, "POST", "/v1/conversations/{conversation_id}", access="private",
          answer=a.Conversation, body=ConversationUpdate, errors=(404, 413, 503))
async def update_conversation(conversation_id: ConversationId, request: Request,
                              principal: PrincipalDep,
                              conversations: ConversationsDep) -> Response:
    body = await read_strict(request, ConversationUpdate)
    return json_response(await conversations.update(principal, conversation_id,
                                                    body.metadata))


@endpoint(router, "DELETE", "/v1/conversations/{conversation_id}", access="private",
          answer=a.Deleted, errors=(404, 503))
async def delete_conversation(conversation_id: ConversationId, principal: PrincipalDep,
                              conversations: ConversationsDep) -> Response:
    return json_response(await conversations.delete(principal, conversation_id))


@endpoint(router, "POST", "/v1/conversations/{conversation_id}/items", access="private",
          answer=a.ItemList, body=ConversationItemsCreate, errors=(404, 413, 503))
async def add_conversation_items(conversation_id: ConversationId, request: Request,
                                 principal: PrincipalDep,
                                 conversations: ConversationsDep) -> Response:
    body = await read_strict(request, ConversationItemsCreate)
    return json_response(await conversations.add_items(principal, conversation_id, body))


@endpoint(router, "GET", "/v1/conversations/{conversation_id}/items", access="private",
          answer=a.ItemList, errors=(404, 503))
async def list_conversation_items(conversation_id: ConversationId, principal: PrincipalDep,
                                  conversations: ConversationsDep,
                                  limit: Annotated[int, Query(ge=1, le=100)] = 20,
                                  order: Literal["asc", "desc"] = "desc",
                                  after: Annotated[str | None, Query(max_length=64)] = None
                                  ) -> Response:
    return json_response(await conversations.list_items(principal, conversation_id,
                                                        limit=limit, order=order, after=after))


@endpoint(router, "GET", "/v1/conversations/{conversation_id}/items/{item_id}", access="private",
          answer=a.ConversationItem, errors=(404, 503))
async def get_conversation_item(conversation_id: ConversationId, item_id: ItemId,
                                principal: PrincipalDep,
                                conversations: ConversationsDep) -> Response:
    return json_response(await conversations.get_item(principal, conversation_id, item_id))


@endpoint(router, "DELETE", "/v1/conversations/{conversation_id}/items/{item_id}", access="private",
          answer=a.Conversation, errors=(404, 503))
async def delete_conversation_item(conversation_id: ConversationId, item_id: ItemId,
                                   principal: PrincipalDep,
                                   conversations: ConversationsDep) -> Response:
    return json_response(await conversations.delete_item(principal, conversation_id, item_id))
