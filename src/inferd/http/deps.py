"""Named dependencies and request helpers shared by the routes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel

from inferd.auth.principal import ANONYMOUS, Principal
from inferd.services import Services

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def read_model(request: Request, model: type[M]) -> M:
    """Parse the JSON body into ``model``; errors become 400s naming the field."""
    return model.model_validate_json(await request.body())


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Run ``work``; cancel it if the client goes away first (so a model stops generating)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        raise asyncio.CancelledError("client disconnected")
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def get_principal(request: Request) -> Principal:
    """The caller; the auth middleware puts it in the request scope (anonymous without keys)."""
    principal: Principal = request.scope.get("state", {}).get("principal", ANONYMOUS)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]
