"""``/internal/v1/engines/{instance}``: engines register with a gateway (the engines' key,
``INFERD_ENGINE_API_KEY``, or an admin key). See ``inferd.routing.registration``.

A registration and a deregistration change the replicas: each is recorded in the audit log
(``engine.register``, ``engine.deregister``); heartbeats are not."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from inferd.http.auth import EngineDep
from inferd.http.deps import ServicesDep, read_strict
from inferd.http.operation import endpoint
from inferd.http.responses import json_response
from inferd.routing.registration import EngineHeartbeat, EngineRegister, GatewayEnrolment
from inferd.schemas import answers_control as c

router = APIRouter(prefix="/internal/v1", tags=["engines"])


def get_enrolment(services: ServicesDep, _caller: EngineDep) -> GatewayEnrolment:
    """The engine registrations, for the engines' key and admin keys only."""
    return services.control.enrolment


EnrolmentDep = Annotated[GatewayEnrolment, Depends(get_enrolment)]


@endpoint(router, "PUT", "/engines/{instance}", access="engine", answer=c.EngineRegistered,
          body=EngineRegister, errors=(403, 413, 503))
async def register(instance: str, request: Request, enrolment: EnrolmentDep,
                   services: ServicesDep) -> Response:
    body = await read_strict(request, EngineRegister)
    answer = await enrolment.register(instance, body)
    await services.control.audit.record("engine.register", "engine_instance", instance,
                                        after=body.model_dump(mode="json"))
    return json_response(answer)


@endpoint(router, "POST", "/engines/{instance}/heartbeat", access="engine", answer=c.EngineBeat,
          body=EngineHeartbeat, errors=(403, 404, 413, 503))
async def heartbeat(instance: str, request: Request, enrolment: EnrolmentDep) -> Response:
    raw = await request.body()
    body = EngineHeartbeat() if not raw.strip() else await read_strict(request,
                                                                        EngineHeartbeat)
    return json_response(await enrolment.heartbeat(instance, body))


@endpoint(router, "DELETE", "/engines/{instance}", access="engine", answer=c.EngineLeft,
          errors=(403, 404, 503))
async def deregister(instance: str, enrolment: EnrolmentDep,
                     services: ServicesDep) -> Response:
    answer = await enrolment.deregister(instance)
    await services.control.audit.record("engine.deregister", "engine_instance", instance)
    return json_response(answer)
