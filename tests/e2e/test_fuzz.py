"""Schemathesis fuzzes every operation of inferd's own OpenAPI document, with an admin key and
with a user key: no answer is a 5xx, and every answer is one the document describes (status,
content type, body schema). A few examples per operation here; ``bench/fuzz.py`` runs more."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

from tests import fuzzing
from tests.fuzzing import ADMIN_KEY, DESTRUCTIVE, Target

pytest.importorskip("schemathesis")

EXAMPLES = int(os.environ.get("INFERD_FUZZ_EXAMPLES", "3"))


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Target, Target]]:
    with fuzzing.servers(tmp_path_factory.mktemp("fuzz")) as pair:
        yield pair


def _operations(url: str) -> set[str]:
    paths = httpx.get(url + "/openapi.json").json()["paths"]
    return {f"{method.upper()} {path}" for path, item in paths.items() for method in item}


def _check(tally: fuzzing.Tally, expected: set[str]) -> None:
    print(tally.summary())
    assert tally.operations == expected
    assert tally.requests >= len(expected) * 2  # each operation was called with both keys
    assert not tally.server_errors, "\n".join(tally.server_errors[:20])
    assert not tally.schema_failures, "\n".join(tally.schema_failures[:20])


@pytest.mark.timeout(900)  # about a minute and a half; a loaded machine may take much longer
def test_fuzzing_finds_no_server_error_and_no_undocumented_answer(
        targets: tuple[Target, Target]) -> None:
    main, _ = targets
    tally = fuzzing.fuzz(main.url, [ADMIN_KEY, main.user_key], examples=EXAMPLES,
                         destructive=False)
    every = _operations(main.url)
    _check(tally, {op for op in every
                   if (op.split()[0].lower(), op.split()[1]) not in DESTRUCTIVE})
    # the server is still whole: the admin key and the user key still work
    for key in (ADMIN_KEY, main.user_key):
        assert httpx.get(main.url + "/v1/models",
                         headers={"Authorization": f"Bearer {key}"}).status_code == 200


@pytest.mark.timeout(600)
def test_fuzzing_destructive_operations_on_their_own_server(
        targets: tuple[Target, Target]) -> None:
    _, other = targets
    # the user key first: the admin's calls may disable or delete it
    tally = fuzzing.fuzz(other.url, [other.user_key, ADMIN_KEY], examples=EXAMPLES,
                         destructive=True)
    _check(tally, {f"{method.upper()} {path}" for method, path in DESTRUCTIVE})


def test_fuzzing_reports_answers_the_document_does_not_describe(
        targets: tuple[Target, Target]) -> None:
    """The checks bite: a document that misdescribes two operations gets failures for both."""
    main, _ = targets
    document = httpx.get(main.url + "/openapi.json").json()
    paths = {"/health": document["paths"]["/health"], "/metrics": document["paths"]["/metrics"]}
    health = paths["/health"]["get"]["responses"]["200"]["content"]["application/json"]
    health["schema"] = {"type": "object", "required": ["missing_field"]}
    metrics = paths["/metrics"]["get"]["responses"]["200"]
    metrics["content"] = {"application/json": {"schema": {"type": "object"}}}
    tally = fuzzing.fuzz(main.url, [main.user_key], examples=1, destructive=False,
                         document={**document, "paths": paths})
    assert tally.operations == {"GET /health", "GET /metrics"}
    failed = " ".join(tally.schema_failures)
    assert "GET /health" in failed and "missing_field" in failed
    assert "GET /metrics" in failed and "text/plain" in failed
