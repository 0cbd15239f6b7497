"""Named dependencies and request helpers shared by the routes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Annotated, TypeVar

from fastapi import Depends, Path, Request
from pydantic import BaseModel
from starlette.types import Receive, Scope

from inferd.auth.principal import Principal
from inferd.http.disconnect import cancel_on_disconnect
from inferd.http.fast import principal_of
from inferd.json_bodies import parse_json
from inferd.services import Services

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


# The dependencies are ``async def``: FastAPI runs a plain ``def`` dependency in a worker
# thread, which costs more than the whole lookup.
async def _services(request: Request) -> Services:
    return get_services(request)


ServicesDep = Annotated[Services, Depends(_services)]


async def read_model(request: Request, model: type[M]) -> M:
    """Parse the JSON body into ``model``; errors become 400s naming the field."""
    return model.model_validate_json(await request.body())


async def read_strict(request: Request, model: type[M]) -> M:
    """``read_model`` for a body that is stored or changes configuration: the rules of
    ``inferd.json_bodies`` first (no NaN, NUL or deep nesting, no key given twice)."""
    return model.model_validate(parse_json(await request.body(), unique_keys=True))


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Run ``work``; cancel it if the client goes away first (so a model stops generating)."""
    return await until_disconnected(request.receive, work, request.scope)


async def until_disconnected(receive: Receive, work: Awaitable[T], scope: Scope | None = None
                             ) -> T:
    """``unless_disconnected`` for a raw ASGI ``receive`` (the body must have been read).

    ``work`` runs in the calling task; it is cancelled if the client goes first (see
    ``http.disconnect.cancel_on_disconnect``).
    """
    with cancel_on_disconnect(receive, scope) as client:
        try:
            return await work
        except asyncio.CancelledError:
            if client.gone:
                raise asyncio.CancelledError("client disconnected") from None
            raise


def get_principal(request: Request) -> Principal:
    """The caller, as the auth middleware put it in the request scope (``OPEN_MODE`` while
    keys are not required); 401 when there is none (``fast.principal_of``)."""
    return principal_of(request.scope)


async def _principal(request: Request) -> Principal:
    return get_principal(request)


PrincipalDep = Annotated[Principal, Depends(_principal)]


# Ids in a path, bounded to what their columns hold (larger numbers name no row and must not
# reach a database driver): BIGINT ids, and the INTEGER ids of the
# contexts-and-results API's contexts.
RowId = Annotated[int, Path(ge=0, le=2**63 - 1)]
ContextId = Annotated[int, Path(ge=0, le=2**31 - 1)]
