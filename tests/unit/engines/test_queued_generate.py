"""The queued generate system's worker protocol as inferd writes and reads it (no services:
``tests/cluster/test_queued_generate.py`` runs it against the system's real package)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from inferd.engines.echo import EchoEngine
from inferd.engines.queued_generate import (
    QueuedGenerateEngine,
    _messages,
    broker_url_of,
    status_record,
    task_message,
)
from inferd.engines.queued_generate_worker import Malformed, TaskServer, parse
from inferd.engines.remote import RemoteSpec
from inferd.errors import InvalidRequest
from inferd.logs import job_id_var
from inferd.outbound import HostAllowList
from inferd.routing.catalog import ReplicaCatalog
from inferd.routing.router import Router
from inferd.schemas.openai import ChatCompletionRequest
from inferd.settings import DEFAULT_REPLICA_NETWORKS, ModelSpec


def test_a_status_record_has_the_fields_the_system_reads() -> None:
    record = orjson.loads(status_record("error", None, {"type": "Exception", "msg": "boom"}))
    assert set(record) == {"status", "last_update", "status_message", "is_completed", "error"}
    assert record["is_completed"] is True and record["error"] == {"type": "Exception",
                                                                  "msg": "boom"}
    pending = orjson.loads(status_record("pending", "Job is created"))
    assert pending["is_completed"] is False and pending["status_message"] == "Job is created"


def test_a_task_message_is_the_backends_envelope() -> None:
    prompt = {"job_id": "j1", "priority": 1, "meta": {}, "messages": []}
    message = task_message("j1", "chat_completion", prompt)
    assert message == {"type": "task", "task": "generate", "args": [], "id": "j1",
                       "retries": 0, "eta": None,
                       "kwargs": {"prompt": prompt, "prompt_type": "chat_completion"}}
    assert parse(orjson.dumps(message)) == ("chat_completion", prompt, "j1")


@pytest.mark.parametrize("body", [b"not json", b"{}", b'{"kwargs": {"prompt": {}}}',
                                  b'{"kwargs": {"prompt_type": "embed", "prompt": '
                                  b'{"job_id": "x"}}}'])
def test_a_message_that_is_not_a_task_is_malformed(body: bytes) -> None:
    with pytest.raises(Malformed):
        parse(body)


def test_the_broker_credential_comes_from_the_api_key() -> None:
    assert broker_url_of("amqp://mq:5672/", "ad min:p@ss") == "amqp://ad%20min:p%40ss@mq:5672/"
    assert broker_url_of("amqp://mq/vhost", "") == "amqp://guest:guest@mq/vhost"
    with pytest.raises(InvalidRequest):
        broker_url_of("http://mq:5672/", "")


def engine(**options: Any) -> QueuedGenerateEngine:
    return QueuedGenerateEngine("legacy", RemoteSpec(url="amqp://127.0.0.1:5672/",
                                                     upstream_model="gpt-model",
                                                     options=options))


def test_the_request_becomes_the_tasks_meta_and_messages() -> None:
    replica = engine(queue="q", priority=3)
    assert replica.queue == "q" and replica.priority == 3
    assert replica._meta(None, None, None) == {"temperature": 0.2, "tokens_limit": 8096,
                                               "stop_words": None, "model": "gpt-model"}
    assert replica._meta(0.5, 20, "END")["stop_words"] == ["END"]
    request = ChatCompletionRequest.model_validate({"model": "legacy", "messages": [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]}]})
    assert _messages(request) == [{"role": "user", "content": "be brief"},
                                  {"role": "user", "content": "hi"}]


def test_a_job_names_its_task_and_a_request_gets_a_fresh_one() -> None:
    replica, other = engine(queue="a"), engine(queue="b")
    assert replica._task_id() != replica._task_id()
    token = job_id_var.set("job_1")
    try:
        assert replica._task_id() == replica._task_id()
        assert replica._task_id().startswith("inferd-job_1-")
        assert other._task_id() != replica._task_id()  # another queue: another task
    finally:
        job_id_var.reset(token)


async def test_replica_hosts_are_checked_against_the_allow_list() -> None:
    catalog = ReplicaCatalog(Router(), None, HostAllowList(DEFAULT_REPLICA_NETWORKS),  # type: ignore[arg-type]
                             interval=1, cooldown_base=1, cooldown_max=1)
    await catalog.check("amqp://127.0.0.1:5672/", {"redis_url": "redis://10.0.0.2:6379/0"},
                        "queued_generate")
    with pytest.raises(InvalidRequest) as refused:
        await catalog.check("amqp://127.0.0.1:5672/", {"redis_url": "redis://8.8.8.8:6379"},
                            "queued_generate")
    assert refused.value.param == "options.redis_url"
    with pytest.raises(InvalidRequest) as refused:
        await catalog.check("amqp://u:p@127.0.0.1:5672/", {}, "queued_generate")
    assert refused.value.param == "url"
    with pytest.raises(InvalidRequest):
        await catalog.check("http://127.0.0.1:5672/", {}, "queued_generate")


async def test_a_task_runs_on_the_local_engine_with_its_meta() -> None:
    echo = EchoEngine(ModelSpec(name="echo", kind="echo"))
    await echo.start()
    server = TaskServer("amqp://unused/", "redis://unused/", "q", None,  # type: ignore[arg-type]
                        {"echo": echo})
    assert server.model == "echo"
    chat = {"job_id": "1", "meta": {"temperature": 0.2, "tokens_limit": 2,
                                    "stop_words": ["", "zzz"], "model": "not-here"},
            "messages": [{"role": "user", "content": "one two three"}]}
    assert await server.run("chat_completion", chat) == "one two"  # tokens_limit 2
    single = {"job_id": "2", "meta": {"model": "echo"}, "content": "four five"}
    assert await server.run("single_generation", single) == "four five"
    with pytest.raises(ValueError, match="not hosted here"):
        TaskServer("amqp://unused/", "redis://unused/", "q", None,  # type: ignore[arg-type]
                   {"echo": echo}, model="other")
