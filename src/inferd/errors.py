"""The domain error tree. Each error knows its HTTP status and its OpenAI error type.

Core code raises these; ``inferd.http.errors`` turns them into the OpenAI error shape
``{"error": {"message", "type", "param", "code"}}`` in one place.

    InferdError (500 server_error)
    ├── InvalidRequest (400 invalid_request_error)
    │   ├── ContextLengthExceeded (code context_length_exceeded)
    │   └── UnsupportedParameter (code unsupported_parameter)
    ├── AuthenticationFailed (401 authentication_error)
    ├── PermissionDenied (403 permission_error)
    ├── NotFound (404 not_found_error)
    │   └── ModelNotFound (code model_not_found)
    ├── Conflict (409 conflict_error)
    ├── PayloadTooLarge (413 invalid_request_error)
    ├── RateLimited (429 rate_limit_error, with Retry-After)
    ├── UpstreamError (502 upstream_error)
    │   └── UpstreamTimeout (504)
    ├── Unavailable (503 service_unavailable)
    └── how a job ended without a result (stored in the job, see ``inferd.jobs``):
        DeadlineExceeded (408 timeout_error), MaxAttemptsExceeded (500),
        JobCancelled (cancelled)
"""

from __future__ import annotations


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

    def to_dict(self) -> dict[str, object]:
        """The OpenAI error object (the value under ``"error"``)."""
        return {"message": self.message, "type": self.type, "param": self.param,
                "code": self.code}


class InvalidRequest(InferdError):
    status = 400
    type = "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class UnsupportedParameter(InvalidRequest):
    code = "unsupported_parameter"


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


class RateLimited(InferdError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float = 1.0, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after = retry_after


class UpstreamError(InferdError):
    status = 502
    type = "upstream_error"
    code = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class Unavailable(InferdError):
    status = 503
    type = "service_unavailable"
    code = "service_unavailable"


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


class JobCancelled(InferdError):
    """A job cancelled before it finished (by its owner, or with its batch)."""

    type = "cancelled"
    code = "cancelled"

    def __init__(self, message: str = "The job was cancelled.", *,
                 code: str | None = None) -> None:
        super().__init__(message, code=code)
