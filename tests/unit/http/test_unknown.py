"""The 404 for an unknown URL says what exists instead."""

from __future__ import annotations

from inferd.http.unknown import unknown_route_message

ROUTES = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models",
          "/v1/responses", "/v1/responses/{response_id}", "/models", "/ui/keys"]


def test_known_openai_path_not_served() -> None:
    message = unknown_route_message("POST", "/v1/assistants", ROUTES)
    assert "not supported by this server" in message and "/v1/assistants" in message
    assert "not supported" in unknown_route_message("GET", "/v1/threads/t1/runs", ROUTES)


def test_root_path_of_a_v1_route_names_the_base_url() -> None:
    message = unknown_route_message("POST", "/embeddings", ROUTES)
    assert "/v1/embeddings" in message and "base URL" in message


def test_typo_names_nearby_routes() -> None:
    message = unknown_route_message("POST", "/v1/chat/completion", ROUTES)
    assert "/v1/chat/completions" in message
    assert "/v1/responses" in unknown_route_message("GET", "/v1/response", ROUTES)


def test_nothing_nearby() -> None:
    assert unknown_route_message("GET", "/zzz", ROUTES) == "Unknown request URL: GET /zzz."
