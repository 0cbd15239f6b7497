"""The OpenAPI document describes every operation: its request body, its success answer from a
response model, and the error statuses in the shared ``ErrorResponse`` shape."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from inferd.app import create_app
from inferd.http.routes import declared
from inferd.settings import Settings


@cache
def _document() -> dict[str, Any]:
    document: dict[str, Any] = create_app(Settings(bundled_models=False)).openapi()
    return document


def _operations() -> dict[tuple[str, str], dict[str, Any]]:
    return {(method, path): op for path, item in _document()["paths"].items()
            for method, op in item.items()}


def test_every_operation_is_declared_and_every_declaration_documented() -> None:
    assert set(_operations()) == set(declared().documented())


def test_every_operation_has_a_success_answer_and_errors_in_the_shared_shape() -> None:
    for (method, path), operation in _operations().items():
        responses = operation["responses"]
        assert "422" not in responses, (method, path)
        success = [s for s in responses if s.startswith("2")]
        assert success and all(responses[s].get("content") for s in success), (method, path)
        for status, answer in responses.items():
            if status.startswith(("4", "5")) and path != "/ready":  # /ready: 503 not ready
                schema = answer["content"]["application/json"]["schema"]["$ref"]
                assert schema.rsplit("/", 1)[1] in {"ErrorResponse", "AnthropicError"}


def test_statuses_and_media_types_are_the_ones_sent() -> None:
    ops = _operations()
    metrics = ops[("get", "/metrics")]["responses"]["200"]["content"]
    assert set(metrics) == {"text/plain"}
    assert "202" in ops[("post", "/v1/jobs")]["responses"]
    assert "202" in ops[("post", "/v1/chat/completions")]["responses"]
    assert "201" in ops[("post", "/admin/v1/keys")]["responses"]
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages"):
        assert "text/event-stream" in ops[("post", path)]["responses"]["200"]["content"], path
    assert "text/event-stream" in ops[("get", "/v1/jobs/{job_id}/events")]["responses"]["200"][
        "content"]
    for method, path in (("get", "/v1/models"), ("get", "/admin/v1/keys"), ("get", "/tables")):
        assert "401" in ops[(method, path)]["responses"], path
    assert "401" not in ops[("get", "/health")]["responses"]
    messages = ops[("post", "/v1/messages")]["responses"]
    assert messages["400"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/AnthropicError")


def test_request_bodies_of_the_replaced_systems_and_the_control_plane() -> None:
    ops = _operations()
    for (method, path), model in (
            (("post", "/admin/v1/keys"), "KeySpec"), (("post", "/v1/jobs"), "JobCreate"),
            (("post", "/contexts/"), "ContextCreate"), (("post", "/generate"), "QueuedGenerate"),
            (("post", "/generate_api_key"), "GenerateKeyRequest"),
            (("post", "/old/initialize"), "Initialize"),
            (("post", "/v1/messages"), "MessagesRequest"),
            (("post", "/v1/batches"), "BatchCreate")):
        body = ops[(method, path)]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{model}"}, path
    upload = ops[("post", "/v1/files")]["requestBody"]["content"]["multipart/form-data"]
    assert set(upload["schema"]["required"]) == {"file", "purpose"}


def test_answers_come_from_response_models_and_every_reference_resolves() -> None:
    document = _document()
    schemas = document["components"]["schemas"]
    job = schemas["Job"]
    assert {"id", "status", "result", "error"} <= set(job["required"])
    key = schemas["ApiKey"]
    assert "key_hash" not in key["properties"] and "prefix" in key["required"]
    refs = set(re.findall(r"#/components/schemas/([^\"']+)", str(document)))
    assert refs <= set(schemas)


def test_security_schemes_and_each_operations_security_follow_the_access_policy() -> None:
    from inferd.http.access import POLICY

    document = _document()
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http",
                                     "scheme": "bearer"}
    assert schemes["apiKeyAuth"] == {**schemes["apiKeyAuth"], "type": "apiKey",
                                     "in": "header", "name": "X-API-Key"}
    keyed = [{"bearerAuth": []}, {"apiKeyAuth": []}]
    assert document["security"] == keyed
    operations = _operations()
    seen = 0
    for (method, route), access in POLICY.items():
        path = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", route)
        operation = operations.get((method.lower(), path))
        if operation is None:
            continue  # routes left out of the document (the UI's files)
        seen += 1
        assert operation["x-inferd-access"] == access
        if path in ("/metrics", "/ready"):
            assert operation["security"] == [{}, *keyed]  # a key optional (settings)
        elif access == "public":
            assert operation["security"] == [], path
        else:
            assert operation["security"] == keyed, path
    assert seen == len(operations)
    assert operations[("post", "/chat/completions")]["security"] == keyed
    # a key may be required there (INFERD_METRICS_REQUIRE_KEY): its refusals are documented
    assert {"401", "429"} <= set(operations[("get", "/metrics")]["responses"])
    assert "401" not in operations[("get", "/ready")]["responses"]  # /ready never refuses
