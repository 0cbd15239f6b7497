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

from inferd.auth.scim import MEDIA_TYPE as SCIM_MEDIA_TYPE
from inferd.auth.scim import ScimError, scim_error
from inferd.auth.scim import error_body as scim_error_body
from inferd.errors import (
    InferdError,
    InternalError,
    Overloaded,
    RateLimited,
    envelope,
    invalid_request,
    param_path,
)
from inferd.http.operation import is_scim_path
from inferd.http.unknown import unknown_route_message
from inferd.storage_faults import MESSAGES, STORE_ERRORS, bad_value, storage_fault, unreachable

__all__ = ["error_response", "exception_response", "inferd_error_response", "install",
           "param_path", "validation_error_response"]

log = logging.getLogger("inferd.http")

_STATUS_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                 403: "permission_error", 404: "not_found_error", 405: "invalid_request_error",
                 409: "conflict_error", 413: "invalid_request_error", 415: "invalid_request_error",
                 422: "invalid_request_error", 429: "rate_limit_error"}


def error_response(status: int, message: str, *, type: str | None = None,
                   param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    """The answer for a failure that is no ``InferdError`` (the framework's own 404, 405...)."""
    error = InferdError(message, param=param, code=code)
    error.status, error.type = status, type or _STATUS_TYPES.get(status, "server_error")
    return inferd_error_response(error, headers)


def inferd_error_response(exc: InferdError,
                          headers: dict[str, str] | None = None) -> Response:
    if isinstance(exc, RateLimited | Overloaded):
        headers = {**(headers or {}), "Retry-After": exc.retry_after_header}
    return Response(orjson.dumps(envelope(exc)), status_code=exc.status,
                    media_type="application/json", headers=headers)


def validation_error_response(errors: list[Any]) -> Response:
    return inferd_error_response(invalid_request(errors))


def scim_shaped(path: str, response: Response, exc: Exception | None = None) -> Response:
    """An error answer on the SCIM routes in SCIM's shape (RFC 7644 3.12), its status and
    headers kept; elsewhere ``response`` itself."""
    if not is_scim_path(path):
        return response
    error = InferdError(orjson.loads(bytes(response.body))["error"]["message"])
    error.status = response.status_code
    if isinstance(exc, InferdError):
        error.code = exc.code
    body = orjson.dumps(scim_error_body(scim_error(
        exc if isinstance(exc, ScimError) else error)))
    headers = {k: v for k, v in response.headers.items()
               if k.lower() not in ("content-length", "content-type")}
    return Response(body, status_code=response.status_code, media_type=SCIM_MEDIA_TYPE,
                    headers=headers)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into the OpenAI error shape (SCIM's on
    the SCIM routes: ``scim_shaped``)."""

    @app.exception_handler(InferdError)
    async def _inferd(request: Request, exc: InferdError) -> Response:
        return scim_shaped(request.url.path, inferd_error_response(exc), exc)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, exc: RequestValidationError) -> Response:
        return scim_shaped(request.url.path, validation_error_response(list(exc.errors())))

    @app.exception_handler(ValidationError)
    async def _validation(request: Request, exc: ValidationError) -> Response:
        return scim_shaped(request.url.path, validation_error_response(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            # the documented paths (the OpenAPI document is built once and cached)
            paths = request.app.openapi().get("paths", {})
            message = unknown_route_message(request.method, request.url.path, paths)
        headers = dict(exc.headers) if exc.headers else None
        return scim_shaped(request.url.path,
                           error_response(exc.status_code, message, headers=headers))

    @app.exception_handler(OverflowError)
    async def _overflow(request: Request, exc: OverflowError) -> Response:
        return scim_shaped(request.url.path,
                           exception_response(exc, request.method, request.url.path))

    async def _store(request: Request, exc: Exception) -> Response:
        # handled here, inside the app, so the connection stays usable (an error that
        # reaches the server's last handler closes it)
        return scim_shaped(request.url.path,
                           exception_response(exc, request.method, request.url.path))

    for error in (*STORE_ERRORS, OSError):  # OSError: files inferd writes (uploads)
        app.add_exception_handler(error, _store)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        return scim_shaped(request.url.path,
                           exception_response(exc, request.method, request.url.path))


def exception_response(exc: Exception, method: str, path: str) -> Response:
    """The answer to ``exc`` raised by a request's handler: what the handlers ``install``
    registers give (the framework's own ``HTTPException`` aside); the fast paths, which run
    outside the framework's exception middleware, answer with it too."""
    if isinstance(exc, InferdError):
        return inferd_error_response(exc)
    if isinstance(exc, RequestValidationError | ValidationError):
        return validation_error_response(list(exc.errors()))
    if isinstance(exc, OverflowError):  # a number in the request larger than the database holds
        return error_response(400, "A number in the request is too large.",
                              code="invalid_value")
    if isinstance(exc, (*STORE_ERRORS, OSError)):
        return _store_error_response(exc, method, path)
    return _unexpected_response(exc, method, path)


def _store_error_response(exc: Exception, method: str, path: str) -> Response:
    fault = storage_fault(exc)
    if fault is not None:  # disk full, read-only, I/O error: the database's or a file's
        log.warning("storage fault (%s) on %s %s: %s", fault, method, path,
                    exc.__class__.__name__)
        return error_response(503, MESSAGES[fault] + " Please retry later.",
                              type="service_unavailable", code="store_unavailable",
                              headers={"Retry-After": "5"})
    if bad_value(exc):
        return error_response(400, "A value in the request cannot be stored (too long, "
                              "out of range or not valid text).", code="invalid_value")
    if not unreachable(exc):
        return _unexpected_response(exc, method, path)
    log.warning("database unreachable on %s %s: %s", method, path, exc.__class__.__name__)
    return error_response(503, "The database is unreachable; please retry shortly.",
                          type="service_unavailable", code="store_unavailable",
                          headers={"Retry-After": "1"})


def _unexpected_response(exc: Exception, method: str, path: str) -> Response:
    log.error("unhandled error on %s %s", method, path, exc_info=exc)
    return inferd_error_response(InternalError())
