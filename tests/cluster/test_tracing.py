"""A job's trace across processes: the gateway that takes the request and the worker that runs
it (PostgreSQL, RabbitMQ) export to one real OTLP/HTTP receiver (``tests.otlp_receiver``), and
the worker's spans join the trace of the request that submitted the job."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.cluster.conftest import migrate, submit, wait_finished
from tests.helpers import InferdProcess
from tests.otlp_receiver import children, one, otlp_receiver

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
JOB = "job /v1/chat/completions"


def test_a_worker_runs_a_job_in_the_trace_of_the_request_that_submitted_it(
        start: Callable[..., InferdProcess], cluster_env: dict[str, str]) -> None:
    assert migrate(cluster_env).returncode == 0
    with otlp_receiver() as receiver:
        start("worker", "--model", "echo", **receiver.env("worker"))
        gateway = start("gateway", **receiver.env("gateway"))
        with httpx.Client(base_url=gateway.url, timeout=30) as http:
            job = submit(http, "echo", "one two three")
            untraced = job["id"]
            http.headers["traceparent"] = TRACEPARENT
            job = submit(http, "echo", "four five")
            del http.headers["traceparent"]
            done = wait_finished(http, [untraced, job["id"]])
        assert done[job["id"]]["status"] == "completed", done
        gateway_spans = receiver.wait(lambda spans: any(
            s.trace_id == TRACE_ID and s.name == "POST /v1/jobs" for s in spans), "gateway")
        worker_spans = receiver.wait(lambda spans: sum(
            s.name == JOB for s in spans) == 2, "worker")
    submitted = one([s for s in gateway_spans if s.trace_id == TRACE_ID], "POST /v1/jobs")
    assert submitted.parent_id == CALLER_SPAN
    assert submitted.attributes["http.response.status_code"] == 202
    assert submitted.resource["inferd.role"] == "gateway"

    # the worker's run of the job is the child of the gateway's span, in another process
    run = one(worker_spans, JOB, **{"inferd.job.id": job["id"]})
    assert run.trace_id == TRACE_ID and run.parent_id == submitted.span_id
    assert run.kind == "consumer" and run.resource["inferd.role"] == "worker"
    assert run.attributes["inferd.job.outcome"] == "completed"
    assert run.attributes["inferd.job.attempt"] == 1
    (inference,) = children(worker_spans, run)
    usage = done[job["id"]]["usage"]
    assert inference.name == "chat echo"
    assert inference.attributes | {
        "gen_ai.system": "inferd", "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "echo", "gen_ai.response.model": "echo",
        "gen_ai.usage.input_tokens": usage["prompt_tokens"],
        "gen_ai.usage.output_tokens": usage["completion_tokens"],
        "gen_ai.response.finish_reasons": ["stop"]} == inference.attributes
    (route,) = children(worker_spans, inference)
    (attempt,) = children(worker_spans, route)
    assert attempt.attributes["inferd.replica.id"] == "local:echo"
    (generate,) = children(worker_spans, attempt)
    assert generate.name == "generate echo"

    # a job submitted without a trace starts one of its own in the gateway
    first = one(worker_spans, JOB, **{"inferd.job.id": untraced})
    assert first.trace_id != TRACE_ID
    assert any(s.span_id == first.parent_id and s.name == "POST /v1/jobs"
               for s in gateway_spans)


def test_a_request_to_a_model_only_workers_host_is_answered_in_its_trace(
        start: Callable[..., InferdProcess], cluster_env: dict[str, str]) -> None:
    assert migrate(cluster_env).returncode == 0
    with otlp_receiver() as receiver:
        start("worker", "--model", "echo", **receiver.env("worker"))
        gateway = start("gateway", **receiver.env("gateway"))
        for stream in (False, True):  # the request crosses the broker both ways
            body = {"model": "echo", "stream": stream,
                    "messages": [{"role": "user", "content": "over the broker"}]}
            answer = httpx.post(gateway.url + "/v1/chat/completions", json=body,
                                headers={"traceparent": TRACEPARENT}, timeout=60)
            assert answer.status_code == 200, answer.text
        gateway_spans = receiver.wait(lambda spans: sum(
            s.name == "POST /v1/chat/completions" for s in spans) == 2, "gateway")
        worker_spans = receiver.wait(lambda spans: sum(
            s.name == "answer echo" for s in spans) == 2, "worker")
    attempts = [s for s in gateway_spans if s.name == "chat echo" and s.kind == "client"]
    assert len(attempts) == 2
    for attempt in attempts:
        assert attempt.trace_id == TRACE_ID and attempt.attributes["gen_ai.system"] == "queue"
        # the worker's answer is the child of the gateway's attempt, across the broker
        (answered,) = [s for s in worker_spans if s.parent_id == attempt.span_id]
        assert answered.name == "answer echo" and answered.kind == "server"
        assert answered.trace_id == TRACE_ID
        (generate,) = children(worker_spans, answered)
        assert generate.name == "generate echo"
        assert generate.attributes["gen_ai.usage.output_tokens"] == 3
