"""The error mapping of the HTTP layer."""

from __future__ import annotations

import orjson

from inferd.errors import RateLimited
from inferd.http.errors import inferd_error_response, param_path


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
