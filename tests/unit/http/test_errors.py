"""The error mapping of the HTTP layer."""

from __future__ import annotations

import errno

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import exc as sa_exc

from inferd.errors import InvalidRequest, RateLimited
from inferd.http.errors import exception_response, inferd_error_response, install, param_path


def test_param_path() -> None:
    assert param_path(("body", "messages", 0, "role")) == "messages[0].role"
    # a discriminated union adds its member list and the tag ("text") before the field
    assert param_path(("messages", 1, "content", "list[tagged-union[TextPart,ImagePart]]", 0,
                       "text", "text")) == "messages[1].content[0].text"
    assert param_path(("stop", "list[str]")) == "stop"
    assert param_path(()) is None


def test_rate_limited_has_retry_after() -> None:
    response = inferd_error_response(RateLimited("slow down", retry_after=2.4))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    assert orjson.loads(response.body)["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize("exc", [
    InvalidRequest("bad", param="x"),
    RateLimited("slow down", retry_after=1.0),
    OverflowError("too large"),
    ConnectionRefusedError("database down"),
    sa_exc.OperationalError("SELECT 1", {}, Exception("server closed the connection")),
    OSError(errno.ENOSPC, "No space left on device"),
    ValueError("a bug"),
], ids=lambda exc: type(exc).__name__)
def test_the_fast_paths_answer_errors_as_the_installed_handlers_do(exc: Exception) -> None:
    """``exception_response`` (what the fast paths answer) gives what the app's exception
    handlers give for the same error raised by a route."""
    app = FastAPI()
    install(app)

    @app.post("/v1/jobs")
    async def fail() -> None:
        raise exc

    with TestClient(app, raise_server_exceptions=False) as client:
        routed = client.post("/v1/jobs")
    direct = exception_response(exc, "POST", "/v1/jobs")
    assert direct.status_code == routed.status_code
    assert orjson.loads(direct.body) == routed.json()
    assert routed.json()["error"]["message"]
    assert direct.headers.get("retry-after") == routed.headers.get("retry-after")
