"""The OpenAPI document describes the bodies and statuses the server really uses, and the
documentation pages load every asset from the server itself (they work offline)."""

from __future__ import annotations

import re

import httpx

from tests.openapi_ref import validate


def test_openapi_has_request_bodies_and_real_statuses(http: httpx.Client) -> None:
    doc = http.get("/openapi.json").json()
    paths, schemas = doc["paths"], doc["components"]["schemas"]
    for path, model in (("/v1/chat/completions", "ChatCompletionRequest"),
                        ("/v1/responses", "ResponseCreateRequest"),
                        ("/v1/embeddings", "EmbeddingRequest"), ("/v1/rerank", "RerankRequest")):
        operation = paths[path]["post"]
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{model}"}
        assert "400" in operation["responses"]
    chat = schemas["ChatCompletionRequest"]
    assert {"model", "messages"} <= set(chat["required"])
    assert "202" in paths["/v1/chat/completions"]["post"]["responses"]
    assert "/chat/completions" in paths  # the proxy toolkit's root alias is documented too
    statuses = {s for item in paths.values() for op in item.values() for s in op["responses"]}
    assert "422" not in statuses
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', http.get("/openapi.json").text))
    assert refs <= set(schemas)  # every reference resolves


def test_docs_pages_serve_their_assets(http: httpx.Client) -> None:
    for page in ("/docs", "/redoc"):
        html = http.get(page)
        assert html.status_code == 200
        assert "cdn" not in html.text.lower() and "fonts.googleapis" not in html.text
        assets = re.findall(r'(?:src|href)="(/docs/static/[^"]+)"', html.text)
        assert assets
        for asset in assets:
            response = http.get(asset)
            assert response.status_code == 200 and len(response.content) > 100, asset
    assert http.get("/docs/static/nope.js").status_code == 404


def test_responses_objects_match_the_openai_reference(http: httpx.Client) -> None:
    created = http.post("/v1/responses", json={"model": "smollm2-135m-instruct",
                                               "input": "Hi", "max_output_tokens": 4}).json()
    validate("Response", created)
    validate("Response", http.get(f"/v1/responses/{created['id']}").json())


def test_responses_stream_events_match_the_openai_reference(http: httpx.Client) -> None:
    import json

    events = []
    with http.stream("POST", "/v1/responses", json={
            "model": "smollm2-135m-instruct", "input": "Hi", "max_output_tokens": 4,
            "stream": True}) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert len(events) >= 8
    for event in events:
        validate("ResponseStreamEvent", event)
