"""``/scim/v2``: SCIM 2.0 provisioning of users (``/Users``) and teams (``/Groups``) by an
identity provider (``inferd.auth.scim``), with the discovery documents
(``/ServiceProviderConfig``, ``/ResourceTypes``, ``/Schemas``).

Callers hold a key of the ``scim`` scope (or an admin key; the auth middleware refuses every
other, and refuses a ``scim`` key everywhere else). Answers are ``application/scim+json``;
errors are SCIM's ``Error`` (``inferd.http.errors.scim_shaped``). SCIM describes itself with
its discovery documents, so these routes stay out of the OpenAPI document.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from inferd.auth.scim import (
    MAX_RESULTS,
    MEDIA_TYPE,
    GroupResource,
    ListResponse,
    ScimError,
    ScimService,
    UserResource,
    list_response,
    parse_filter,
    project,
)
from inferd.errors import InferdError
from inferd.http.deps import ServicesDep
from inferd.http.operation import SCIM_PREFIX, endpoint
from inferd.json_bodies import parse_json
from inferd.jsontypes import JsonValue

router = APIRouter(prefix=SCIM_PREFIX, tags=["scim"], include_in_schema=False)


def _scim(services: ServicesDep) -> ScimService:
    return services.auth.scim


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + SCIM_PREFIX


def _answer(content: object, status: int = 200, *, etag: str | None = None,
            location: str | None = None) -> Response:
    headers = {}
    if etag is not None:
        headers["ETag"] = etag
    if location is not None:
        headers["Location"] = location
    return Response(orjson.dumps(content), status_code=status, media_type=MEDIA_TYPE,
                    headers=headers)


def _resource(request: Request, resource: UserResource | GroupResource,
              status: int = 200) -> Response:
    """One resource, with only the attributes the query asks for; its version as ETag."""
    meta = resource["meta"]
    return _answer(project(resource, *_attributes(request)), status, etag=meta["version"],
                   location=meta["location"] if status == 201 else None)


def _attributes(request: Request) -> tuple[list[str] | None, list[str] | None]:
    def names(key: str) -> list[str] | None:
        text = request.query_params.get(key)
        if text is None or not text.strip():
            return None
        return [n.strip().rsplit(":", 1)[-1] if n.strip().lower().startswith("urn:")
                else n.strip() for n in text.split(",") if n.strip()]

    return names("attributes"), names("excludedAttributes")


def _number(request: Request, key: str, default: int) -> int:
    text = request.query_params.get(key)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ScimError(400, f"'{key}' must be an integer.", "invalidValue") from None


def _paging(request: Request) -> tuple[int, int]:
    """``startIndex`` (1-based; below 1 is 1) and ``count`` (below 0 is 0; above
    ``MAX_RESULTS`` is ``MAX_RESULTS``), RFC 7644 3.4.2.4."""
    start = max(1, _number(request, "startIndex", 1))
    count = min(MAX_RESULTS, max(0, _number(request, "count", 100)))
    return start, count


async def _body(request: Request) -> JsonValue:
    try:
        body: JsonValue = parse_json(await request.body(), unique_keys=True)
    except InferdError as exc:
        raise ScimError(400, exc.message, "invalidSyntax") from None
    return body


def _listed(request: Request,
            page: ListResponse[UserResource] | ListResponse[GroupResource]) -> Response:
    attributes = _attributes(request)
    return _answer(list_response([project(r, *attributes) for r in page["Resources"]],
                                 page["totalResults"], page["startIndex"]))


# -- discovery ---------------------------------------------------------------------------------
@endpoint(router, "GET", "/ServiceProviderConfig", access="scim")
async def service_provider_config(request: Request, services: ServicesDep) -> Response:
    """What inferd's SCIM service supports (RFC 7643 section 5)."""
    return _answer(_scim(services).service_provider_config(_base(request)))


@endpoint(router, "GET", "/ResourceTypes", access="scim")
async def resource_types(request: Request, services: ServicesDep) -> Response:
    found = _scim(services).resource_types(_base(request))
    return _answer(list_response(found, len(found), 1))


@endpoint(router, "GET", "/ResourceTypes/{name}", access="scim", errors=(404,))
async def resource_type(name: str, request: Request, services: ServicesDep) -> Response:
    for found in _scim(services).resource_types(_base(request)):
        if found["id"] == name:
            return _answer(found)
    raise ScimError(404, f"No resource type {name}.")


@endpoint(router, "GET", "/Schemas", access="scim")
async def schemas(request: Request, services: ServicesDep) -> Response:
    found = _scim(services).schemas(_base(request))
    return _answer(list_response(found, len(found), 1))


@endpoint(router, "GET", "/Schemas/{schema_id}", access="scim", errors=(404,))
async def schema(schema_id: str, request: Request, services: ServicesDep) -> Response:
    for found in _scim(services).schemas(_base(request)):
        if found["id"] == schema_id:
            return _answer(found)
    raise ScimError(404, f"No schema {schema_id}.")


@endpoint(router, "POST", "/.search", access="scim", errors=(501,), writes=False)
async def search_all() -> Response:
    """Searching Users and Groups at once is not supported (RFC 7644 3.4.3 allows 501); list
    each with ``GET`` and a ``filter``."""
    raise ScimError(501, "inferd searches one resource type at a time: GET /Users or "
                    "/Groups with a filter.")


# -- users ---------------------------------------------------------------------------------------
@endpoint(router, "GET", "/Users", access="scim", errors=(404, 503))
async def list_users(request: Request, services: ServicesDep) -> Response:
    """Users by id; ``filter``: ``userName``, ``externalId``, ``displayName`` or ``id`` ``eq``
    a string; ``startIndex``/``count`` paging."""
    where = parse_filter(request.query_params.get("filter"), "User")
    start, count = _paging(request)
    return _listed(request, await _scim(services).list_users(_base(request), where, start,
                                                             count))


@endpoint(router, "POST", "/Users", access="scim", status=201, errors=(409, 413, 503))
async def create_user(request: Request, services: ServicesDep) -> Response:
    created = await _scim(services).create_user(await _body(request), _base(request))
    return _resource(request, created, 201)


@endpoint(router, "GET", "/Users/{user_id}", access="scim", errors=(404, 503))
async def get_user(user_id: str, request: Request, services: ServicesDep) -> Response:
    return _resource(request, await _scim(services).get_user(user_id, _base(request)))


@endpoint(router, "PUT", "/Users/{user_id}", access="scim", errors=(404, 409, 412, 413, 503))
async def replace_user(user_id: str, request: Request, services: ServicesDep) -> Response:
    """Replace the user's attributes; ``active: false`` disables them (their keys are
    refused at once on every gateway)."""
    replaced = await _scim(services).replace_user(user_id, await _body(request),
                                                  _base(request),
                                                  request.headers.get("if-match"))
    return _resource(request, replaced)


@endpoint(router, "PATCH", "/Users/{user_id}", access="scim",
          errors=(404, 409, 412, 413, 503))
async def patch_user(user_id: str, request: Request, services: ServicesDep) -> Response:
    patched = await _scim(services).patch_user(user_id, await _body(request), _base(request),
                                               request.headers.get("if-match"))
    return _resource(request, patched)


@endpoint(router, "DELETE", "/Users/{user_id}", access="scim", status=204,
          errors=(404, 409, 412, 503))
async def delete_user(user_id: str, request: Request, services: ServicesDep) -> Response:
    """Deprovision: the user is disabled at once, then deleted (or, while they hold keys,
    kept disabled outside SCIM)."""
    await _scim(services).delete_user(user_id, request.headers.get("if-match"),
                                      _base(request))
    return Response(status_code=204)


# -- groups --------------------------------------------------------------------------------------
@endpoint(router, "GET", "/Groups", access="scim", errors=(404, 503))
async def list_groups(request: Request, services: ServicesDep) -> Response:
    """Teams by id; ``filter``: ``displayName``, ``externalId`` or ``id`` ``eq`` a string."""
    where = parse_filter(request.query_params.get("filter"), "Group")
    start, count = _paging(request)
    return _listed(request, await _scim(services).list_groups(_base(request), where, start,
                                                              count))


@endpoint(router, "POST", "/Groups", access="scim", status=201, errors=(409, 413, 503))
async def create_group(request: Request, services: ServicesDep) -> Response:
    created = await _scim(services).create_group(await _body(request), _base(request))
    return _resource(request, created, 201)


@endpoint(router, "GET", "/Groups/{group_id}", access="scim", errors=(404, 503))
async def get_group(group_id: str, request: Request, services: ServicesDep) -> Response:
    return _resource(request, await _scim(services).get_group(group_id, _base(request)))


@endpoint(router, "PUT", "/Groups/{group_id}", access="scim",
          errors=(404, 409, 412, 413, 503))
async def replace_group(group_id: str, request: Request, services: ServicesDep) -> Response:
    replaced = await _scim(services).replace_group(group_id, await _body(request),
                                                   _base(request),
                                                   request.headers.get("if-match"))
    return _resource(request, replaced)


@endpoint(router, "PATCH", "/Groups/{group_id}", access="scim",
          errors=(404, 409, 412, 413, 503))
async def patch_group(group_id: str, request: Request, services: ServicesDep) -> Response:
    """Change the name or the members (``add``/``remove`` of ``members`` values)."""
    patched = await _scim(services).patch_group(group_id, await _body(request),
                                                _base(request),
                                                request.headers.get("if-match"))
    return _resource(request, patched)


@endpoint(router, "DELETE", "/Groups/{group_id}", access="scim", status=204,
          errors=(404, 409, 412, 503))
async def delete_group(group_id: str, request: Request, services: ServicesDep) -> Response:
    """Delete the team (409 while it still has keys)."""
    await _scim(services).delete_group(group_id, request.headers.get("if-match"),
                                       _base(request))
    return Response(status_code=204)
