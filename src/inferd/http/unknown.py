"""What a 404 for an unknown URL says: the OpenAI API paths this server does not serve are
named as such, and a mistyped path is told the routes that exist nearby."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

# Families of the OpenAI API that inferd does not implement.
NOT_SERVED = ("/v1/assistants", "/v1/threads", "/v1/vector_stores", "/v1/fine_tuning",
              "/v1/uploads", "/v1/realtime", "/v1/evals", "/v1/containers",
              "/v1/chatkit", "/v1/videos", "/v1/organization",
              "/v1/audio/translations", "/v1/fine-tunes", "/v1/edits", "/v1/engines")


def unknown_route_message(method: str, path: str, routes: Iterable[str]) -> str:
    """The message of the 404 for ``method path``, given the paths the app serves."""
    for prefix in NOT_SERVED:
        if path == prefix or path.startswith(prefix + "/"):
            return (f"{method} {path}: the OpenAI endpoint {prefix} is not supported by this "
                    "server.")
    known = sorted({r for r in routes if not r.startswith(("/ui", "/static"))})
    if "/v1" + path in known:  # an OpenAI client whose base URL lacks /v1
        return (f"Unknown request URL: {method} {path}. The OpenAI API is served under /v1 "
                f"({'/v1' + path}): set the client's base URL to http://<host>:<port>/v1.")
    close = difflib.get_close_matches(path, known, n=3, cutoff=0.75)
    if not close:
        head = "/".join(path.split("/")[:3])
        close = [r for r in known if r.startswith(head + "/") or r == head][:5]
    message = f"Unknown request URL: {method} {path}."
    if close:
        message += " Routes nearby: " + ", ".join(close) + "."
    return message
