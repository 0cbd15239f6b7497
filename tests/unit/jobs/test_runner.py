"""``run_job``: one job through ``Inference`` with the echo engine, to its ``Outcome``."""

from __future__ import annotations

from typing import Any

import orjson

from inferd.auth.principal import OPEN_MODE, Principal
from inferd.errors import AuthenticationFailed
from inferd.ids import new_id
from inferd.jobs.runner import EventLog, run_job
from inferd.store.jobs import JobRecord, JobStore
from tests.unit.jobs.conftest import Parts


async def job_in(store: JobStore, endpoint: str, request: dict[str, Any]) -> JobRecord:
    record, _ = await store.insert(JobRecord(id=new_id("job"), endpoint=endpoint,
                                             model="echo", request=request, request_hash="h"))
    return record


async def owner(principal: Principal = OPEN_MODE) -> Principal:
    return principal


async def run(parts: Parts, endpoint: str, request: dict[str, Any],
              who: Any = None) -> tuple[Any, JobStore, JobRecord]:
    store = JobStore(parts.db)
    job = await job_in(store, endpoint, request)
    events = EventLog(store, job.id, 1, 0.0, lambda _key: None)
    await events.start(1)
    outcome = await run_job(parts.inference, job, who or owner(), events)
    return outcome, store, job


async def test_chat_completes_with_the_streamed_text_and_its_token_events(parts: Parts) -> None:
    outcome, store, job = await run(parts, "/v1/chat/completions", {
        "model": "echo", "messages": [{"role": "user", "content": "red green blue"}]})
    assert outcome.status == "completed" and outcome.status_code == 200
    assert outcome.result["object"] == "chat.completion"
    assert outcome.result["choices"][0]["message"]["content"] == "red green blue"
    assert outcome.usage == outcome.result["usage"] and outcome.usage["completion_tokens"] == 3
    tokens = "".join(orjson.loads(e.data)["text"]
                     for e in await store.events_after(job.id, 0) if e.kind == "token")
    assert tokens == "red green blue"


async def test_completions_and_embeddings_complete(parts: Parts) -> None:
    outcome, _, _ = await run(parts, "/v1/completions",
                              {"model": "echo", "prompt": ["a b", "c"], "max_tokens": 5})
    assert outcome.status == "completed"
    assert [c["text"] for c in outcome.result["choices"]] == ["a b", "c"]
    outcome, _, _ = await run(parts, "/v1/embeddings", {"model": "echo", "input": ["x", "y"]})
    assert outcome.status == "completed" and len(outcome.result["data"]) == 2


async def test_an_invalid_stored_request_fails_with_its_field_named(parts: Parts) -> None:
    outcome, _, _ = await run(parts, "/v1/chat/completions",
                              {"model": "echo", "temperature": "hot",
                               "messages": [{"role": "user", "content": "a"}]})
    assert outcome.status == "failed" and outcome.status_code == 400
    assert outcome.error["type"] == "invalid_request_error"
    assert outcome.error["param"] == "temperature"


async def test_a_revoked_owner_fails_the_job_not_the_worker(parts: Parts) -> None:
    async def revoked() -> Principal:
        raise AuthenticationFailed("gone", code="key_revoked")

    outcome, _, _ = await run(parts, "/v1/completions", {"model": "echo", "prompt": "a"},
                              revoked())
    assert outcome.status == "failed" and outcome.status_code == 401
    assert outcome.error["code"] == "key_revoked"


async def test_a_key_over_its_rate_is_deferred_and_a_used_budget_fails(parts: Parts) -> None:
    limited = Principal(key_id="7", scope="user", rpm=1)
    request = {"model": "echo", "prompt": "a"}
    first, _, _ = await run(parts, "/v1/completions", request, owner(limited))
    second, _, _ = await run(parts, "/v1/completions", request, owner(limited))
    assert first.status == "completed"
    assert second.status == "deferred" and second.status_code == 429
    budget = Principal(key_id="8", scope="user", token_budget=1)
    outcome, _, _ = await run(parts, "/v1/completions", {**request, "max_tokens": 50},
                              owner(budget))
    assert outcome.status == "failed" and outcome.error["code"] == "insufficient_quota"


async def test_job_errors_name_fields_as_the_api_does(parts: Parts) -> None:
    outcome, _, _ = await run(parts, "/v1/chat/completions",
                              {"model": "echo", "messages": [{"role": "robot", "content": "a"}]})
    assert outcome.status == "failed" and outcome.status_code == 400
    assert outcome.error["param"] == "messages[0].role"  # as in a 400 of the HTTP API
    assert outcome.error["message"].startswith("Invalid value for 'messages[0].role'")


def test_a_job_whose_model_stays_at_capacity_is_deferred_not_failed() -> None:
    from inferd.errors import Overloaded
    from inferd.jobs.runner import error_outcome

    outcome = error_outcome(Overloaded("Model 'm' stayed at capacity.", code="queue_timeout"))
    assert outcome.status == "deferred" and outcome.status_code == 503
    assert outcome.error is not None and outcome.error["code"] == "queue_timeout"
