"""Every error leaves inferd in the OpenAI shape ``{"error": {...}}``: mapped here, once."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from inferd.errors import InferdError, RateLimited
from inferd.http.unknown import unknown_route_message

log = logging.getLogger("inferd.http")

_STATUS_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                 403: "permission_error", 404: "not_found_error", 405: "invalid_request_error",
                 409: "conflict_error", 413: "invalid_request_error", 415: "invalid_request_error",
                 422: "invalid_request_error", 429: "rate_limit_error"}


def error_response(status: int, message: str, *, type: str | None = None,
                   param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"message": message, "type": type or _STATUS_TYPES.get(status, "server_error"),
                      "param": param, "code": code}}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json",
                    headers=headers)


def inferd_error_response(exc: InferdError) -> Response:
    headers = None
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(max(1, round(exc.retry_after)))}
    return error_response(exc.status, exc.message, type=exc.type, param=exc.param,
                          code=exc.code, headers=headers)


def param_path(loc: Any) -> str | None:
    """``("body", "messages", 0, "role")`` -> ``"messages[0].role"``.

    pydantic puts union member names (``str``, ``list[str]``, ``tagged-union[...]``) and the tag
    of a discriminated union into the location; they are not field names and are dropped.
    """
    out = ""
    skip_tag = False
    for part in loc:
        if part in ("body", "query", "path"):
            continue
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        if "[" in part or part.startswith("function-") or part in _TYPE_NAMES:
            skip_tag = skip_tag or "tagged-union" in part
            continue
        if skip_tag:
            skip_tag = False
            continue
        out += f".{part}" if out else str(part)
    return out or None


_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})


def validation_error_response(errors: list[Any]) -> Response:
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        return error_response(400, "We could not parse the JSON body of your request. "
                                   "(HINT: This likely means you aren't using your HTTP library "
                                   "correctly.)", code="invalid_json")
    param = param_path(first.get("loc", ()))
    message = str(first.get("msg", "invalid value"))
    if first.get("type") == "missing":
        message = f"Missing required parameter: '{param}'."
        code = "missing_required_parameter"
    else:
        message = f"Invalid value for '{param}': {message}" if param else message
        code = "invalid_value"
    return error_response(400, message, param=param, code=code)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into the OpenAI error shape."""

    @app.exception_handler(InferdError)
    async def _inferd(_request: Request, exc: InferdError) -> Response:
        return inferd_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_request: Request, exc: RequestValidationError) -> Response:
        return validation_error_response(list(exc.errors()))

    @app.exception_handler(ValidationError)
    async def _validation(_request: Request, exc: ValidationError) -> Response:
        return validation_error_response(list(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            # the documented paths (the OpenAPI document is built once and cached)
            paths = request.app.openapi().get("paths", {})
            message = unknown_route_message(request.method, request.url.path, paths)
        headers = dict(exc.headers) if exc.headers else None
        return error_response(exc.status_code, message, headers=headers)

    @app.exception_handler(OverflowError)
    async def _overflow(_request: Request, exc: OverflowError) -> Response:
        # a number in the request larger than the database can hold
        return error_response(400, "A number in the request is too large.",
                              code="invalid_value")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "The server had an error while processing your request.",
                              type="server_error", code="internal_error")
