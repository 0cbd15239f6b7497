"""The domain error tree. Each error knows its HTTP status and its OpenAI error type.

Core code raises these; ``envelope`` is the one builder of the OpenAI error shape
``{"error": {"message", "type", "param", "code"}}`` (``inferd.http.errors`` sends it, jobs
store its inner object), and ``invalid_request`` the one mapping of a validation failure,
with the one field-path format (``messages[0].role``).

    InferdError (500 server_error)
    ├── InvalidRequest (400 invalid_request_error)
    │   ├── ContextLengthExceeded (code context_length_exceeded)
    │   ├── UnsupportedParameter (code unsupported_parameter)
    │   └── EngineNotInstalled (code engine_not_installed): the model's runtime is an extra
    │       this install lacks (``pip install 'inferd[llamacpp]'``)
    ├── AuthenticationFailed (401 authentication_error)
    ├── PermissionDenied (403 permission_error)
    ├── NotFound (404 not_found_error)
    │   └── ModelNotFound (code model_not_found)
    ├── Conflict (409 conflict_error)
    ├── PayloadTooLarge (413 invalid_request_error)
    ├── HeadersTooLarge (431 invalid_request_error), RequestTimeout (408 timeout_error): the
    │   server's own answers to a request head that is too large or too slow
    ├── RateLimited (429 rate_limit_error, with Retry-After)
    ├── InternalError (code internal_error), StreamInterrupted (code stream_error)
    ├── UpstreamError (502 upstream_error): the upstream failed mid-answer
    │   └── UpstreamUnavailable: failed before answering; the router tries another replica
    │       └── UpstreamTimeout (504): no answer in time (the one timeout error)
    ├── Unavailable (503 service_unavailable)
    │   └── Overloaded (codes queue_full, queue_timeout; with Retry-After): every replica of
    │       the model is at capacity and the gateway's queue for it is full, or the request
    │       waited in it past its timeout (``inferd.routing.fairqueue``)
    └── how a job ended without a result (stored in the job, see ``inferd.jobs``):
        DeadlineExceeded (408 timeout_error), MaxAttemptsExceeded (500),
        JobCancelled (cancelled)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, TypedDict


class ErrorObject(TypedDict):
    """The OpenAI error object: what a client reads under ``"error"``, what a job stores."""

    message: str
    type: str
    param: str | None
    code: str | None


class ErrorEnvelope(TypedDict):
    """``{"error": {...}}``: the body of an error answer."""

    error: ErrorObject


class InferdError(Exception):
    """Base of every error inferd reports to a client."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def to_dict(self) -> ErrorObject:
        """The OpenAI error object (the value under ``"error"``)."""
        return {"message": self.message, "type": self.type, "param": self.param,
                "code": self.code}


def envelope(error: InferdError) -> ErrorEnvelope:
    """``{"error": {...}}``: what a client receives for ``error``."""
    return {"error": error.to_dict()}


class InternalError(InferdError):
    code = "internal_error"

    def __init__(self, message: str = "The server had an error while processing your "
                                      "request.") -> None:
        super().__init__(message)


class StreamInterrupted(InferdError):
    code = "stream_error"

    def __init__(self) -> None:
        super().__init__("The stream was interrupted by a server error.")


class InvalidRequest(InferdError):
    status = 400
    type = "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class UnsupportedParameter(InvalidRequest):
    code = "unsupported_parameter"


class EngineNotInstalled(InvalidRequest):
    """A model whose engine needs a package this install lacks (an extra of inferd)."""

    code = "engine_not_installed"

    def __init__(self, model: str, package: str, extra: str) -> None:
        super().__init__(f"the model '{model}' needs {package}: pip install 'inferd[{extra}]'",
                         param="model")
        self.model = model
        self.extra = extra


class AuthenticationFailed(InferdError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(InferdError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class NotFound(InferdError):
    status = 404
    type = "not_found_error"
    code = "not_found"


class ModelNotFound(NotFound):
    type = "invalid_request_error"
    code = "model_not_found"

    def __init__(self, model: str):
        super().__init__(f"The model '{model}' does not exist or you do not have access to it.",
                         param="model")


class Conflict(InferdError):
    status = 409
    type = "conflict_error"
    code = "conflict"


class PayloadTooLarge(InferdError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class HeadersTooLarge(InferdError):
    status = 431
    type = "invalid_request_error"
    code = "headers_too_large"


class RequestTimeout(InferdError):
    status = 408
    type = "timeout_error"
    code = "request_timeout"


class RateLimited(InferdError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float = 1.0, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after = retry_after

    @property
    def retry_after_header(self) -> str:
        """The ``Retry-After`` value: whole seconds, at least 1."""
        return str(max(1, round(self.retry_after)))


class UpstreamError(InferdError):
    status = 502
    type = "upstream_error"
    code = "upstream_error"


class UpstreamUnavailable(UpstreamError):
    """The replica failed before answering: the router may try another one."""


class UpstreamTimeout(UpstreamUnavailable):
    status = 504
    code = "upstream_timeout"


class Unavailable(InferdError):
    status = 503
    type = "service_unavailable"
    code = "service_unavailable"


class Overloaded(Unavailable):
    """The model's replicas are at capacity and the request could not wait its turn: the
    queue is full (``queue_full``) or its wait ran out (``queue_timeout``)."""

    def __init__(self, message: str, *, retry_after: float = 1.0, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after = retry_after

    @property
    def retry_after_header(self) -> str:
        """The ``Retry-After`` value: whole seconds, at least 1."""
        return str(max(1, round(self.retry_after)))


class DeadlineExceeded(InferdError):
    status = 408
    type = "timeout_error"
    code = "deadline_exceeded"

    def __init__(self) -> None:
        super().__init__("The job did not start before its deadline.", param="deadline")


class MaxAttemptsExceeded(InferdError):
    code = "max_attempts_exceeded"

    def __init__(self, attempts: int) -> None:
        super().__init__(f"The job failed {attempts} times (its worker stopped).")


class JobQuarantined(InferdError):
    """A job whose runs ended the process running them: it is not tried again."""

    code = "job_quarantined"

    def __init__(self, crashes: int) -> None:
        super().__init__(f"The job was quarantined: its runs ended the process running them "
                         f"{crashes} times (from the second on, while it ran alone), so it is "
                         "not tried again.")


class JobCancelled(InferdError):
    """A job cancelled before it finished (by its owner, or with its batch)."""

    type = "cancelled"
    code = "cancelled"

    def __init__(self, message: str = "The job was cancelled.", *,
                 code: str | None = None) -> None:
        super().__init__(message, code=code)


_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})


def param_path(loc: Iterable[Any]) -> str | None:
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
        part = str(part)
        if "[" in part or part.startswith("function-") or part in _TYPE_NAMES:
            skip_tag = skip_tag or "tagged-union" in part
            continue
        if skip_tag:
            skip_tag = False
            continue
        out += f".{part}" if out else part
    return out or None


def _depth_path(error: Mapping[str, Any]) -> list[str]:
    """The segments of an error's parameter path (``a[0].b`` -> ``a``, ``[0]``, ``b``)."""
    return re.findall(r"[^.\[]+|\[\d+\]", param_path(error.get("loc", ())) or "")


def invalid_request(errors: list[Any] | tuple[Any, ...]) -> InvalidRequest:
    """The 400 for pydantic's validation ``errors``: the first one, naming the field.

    A value that fits no member of a union (``content``: a string or a list of parts) fails
    once per member; of the failures inside the first one's field, the one that reaches deepest
    names the part at fault (``messages[0].content[1]``), not the member the value was never
    meant for.
    """
    first: Mapping[str, Any] = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    field = _depth_path(first)
    inside = [e for e in errors if _depth_path(e)[:len(field)] == field]
    first = max(inside, key=lambda e: len(_depth_path(e)), default=first)
    if first.get("type") == "json_invalid":
        return InvalidRequest("We could not parse the JSON body of your request. (HINT: This "
                              "likely means you aren't using your HTTP library correctly.)",
                              code="invalid_json")
    param = param_path(first.get("loc", ()))
    if first.get("type") == "missing":
        return InvalidRequest(f"Missing required parameter: '{param}'.", param=param,
                              code="missing_required_parameter")
    message = str(first.get("msg", "invalid value"))
    return InvalidRequest(f"Invalid value for '{param}': {message}" if param else message,
                          param=param, code="invalid_value")
