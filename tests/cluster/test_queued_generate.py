"""inferd and the queued generate system's real package (protollm-api, in .venv-protollm:
scripts/protollm.sh), both ways, on the real RabbitMQ and a Redis server of the test's own.

- In front of its workers: a ``queued_generate`` replica publishes inferd's requests and jobs
  as that system's tasks; its ``LLMWrap`` worker with its fake model answers them through Redis.
- Behind its backend: ``inferd worker`` consumes its task queue; its backend's own publishing
  and result-waiting code gets the answers.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
import redis
from openai import APIStatusError, OpenAI

from tests.cluster.conftest import AMQP, migrate, submit, wait_finished
from tests.helpers import ROOT, InferdProcess, free_port, require_service, wait_for

pytestmark = [pytest.mark.rabbitmq, pytest.mark.redis]

PROTOLLM_PYTHON = ROOT / ".venv-protollm" / "bin" / "python"
ECHO = json.dumps([{"name": "echo", "kind": "echo"}])


class RedisServer:
    """A redis-server of this test's own (on its own port, keeping nothing on disk), so that
    restarting it disturbs no other test."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self.client()
        wait_for(lambda: _pings(client), within=30, what="redis-server starting")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(15)

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    require_service("rabbitmq")
    if not PROTOLLM_PYTHON.exists():
        pytest.fail("the queued generate system's package is not installed: run "
                    "scripts/protollm.sh (make test does)")
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def queue() -> Iterator[str]:
    name = f"test-protollm-{uuid.uuid4().hex[:10]}"
    yield name

    async def delete() -> None:
        connection = await aio_pika.connect(AMQP)
        async with connection:
            await (await connection.channel()).queue_delete(name)

    asyncio.run(delete())


class Workers:
    """The system's own workers (``LLMWrap`` with its fake model) as processes."""

    def __init__(self, directory: Path, queue: str, redis_port: int) -> None:
        self.directory, self.queue, self.redis_port = directory, queue, redis_port
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = self.directory / f"llmwrap-{len(self.procs)}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen([str(PROTOLLM_PYTHON), "tests/protollm_llmwrap.py",
                                     self.queue, str(self.redis_port), *args],
                                    cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        wait_for(lambda: "consuming" in log.read_text(errors="replace") or proc.poll(),
                 within=60, what="the LLMWrap worker starting")
        assert proc.poll() is None, log.read_text(errors="replace")
        return proc

    def generated(self, task: str) -> int:
        """How many times the workers generated an answer to ``task`` (their own log line)."""
        return sum(log.read_text(errors="replace").count(
            f"The LLM response for task {task} has been generated")
            for log in self.directory.glob("llmwrap-*.log"))

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def workers(tmp_path: Path, queue: str, redis_server: RedisServer) -> Iterator[Workers]:
    pool = Workers(tmp_path / "workers", queue, redis_server.port)
    yield pool
    pool.stop()


def legacy_model(queue: str, redis_server: RedisServer, *, timeout: float = 120.0,
                 fallbacks: list[str] | None = None) -> dict[str, Any]:
    return {"name": "legacy", "fallbacks": fallbacks or [], "replicas": [{
        "kind": "queued_generate", "url": "amqp://127.0.0.1:5672/", "api_key": "guest:guest",
        "timeout": timeout, "options": {"queue": queue, "redis_url": redis_server.url}}]}


@pytest.fixture
def front(tmp_path: Path) -> Iterator[Callable[..., InferdProcess]]:
    """``inferd serve`` with the queued generate replica of model ``legacy``."""
    procs: list[InferdProcess] = []

    def run(model: dict[str, Any], **env: str) -> InferdProcess:
        proc = InferdProcess(tmp_path / f"serve-{len(procs)}", "--no-bundled", env={
            "INFERD_MODELS": ECHO, "INFERD_REMOTE_MODELS": json.dumps([model]),
            "INFERD_HEALTH_CHECK_INTERVAL": "0.5", "INFERD_JOB_SWEEP_SECONDS": "0.5",
            "INFERD_JOB_LEASE_SECONDS": "2", **env})
        procs.append(proc)
        return proc.start()

    yield run
    for proc in procs:
        proc.stop()


def fake_chat_answer(text: str) -> str:
    """What the system's fake model answers a one-message chat."""
    return f"Test answer (your prompt) :role='user' content='{text}'"


def status_of(redis_server: RedisServer, job_id: str) -> dict[str, Any] | None:
    raw = redis_server.client().get(f"job-status:{job_id}")
    return None if raw is None else dict(json.loads(raw))


def task_ids(redis_server: RedisServer) -> list[str]:
    return [key.decode().removeprefix("job-status:")
            for key in redis_server.client().scan_iter("job-status:*")]


def published(redis_server: RedisServer, task: str) -> bool:
    """Whether inferd marked ``task``'s message confirmed by the broker."""
    return bool(redis_server.client().exists(f"inferd-published:{task}"))


def purge(queue: str) -> int:
    """Empty ``queue``; how many messages it held."""
    async def run() -> int:
        connection = await aio_pika.connect(AMQP)
        async with connection:
            channel = await connection.channel()
            found = await channel.get_queue(queue, ensure=True)
            return int((await found.purge()).message_count or 0)

    return asyncio.run(run())


# -- inferd in front of the system's workers ------------------------------------------------

def test_its_worker_answers_inferd_clients_sync_jobs_and_the_queued_api(
        front: Callable[..., InferdProcess], workers: Workers, queue: str,
        redis_server: RedisServer) -> None:
    workers.start()
    server = front(legacy_model(queue, redis_server))
    client = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    chat = client.chat.completions.create(
        model="legacy", messages=[{"role": "user", "content": "hello there"}])
    assert chat.choices[0].message.content == fake_chat_answer("hello there")
    assert chat.usage is not None and chat.usage.completion_tokens > 0
    # a text completion goes as the system's single generation task
    text = client.completions.create(model="legacy", prompt="say this")
    assert text.choices[0].text == "Test answer (your prompt):say this"
    # a stream gets the whole answer in one chunk
    pieces = [c.choices[0].delta.content for c in client.chat.completions.create(
        model="legacy", messages=[{"role": "user", "content": "streamed"}], stream=True)
        if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == fake_chat_answer("streamed")
    with httpx.Client(base_url=server.url, timeout=60) as http:
        job = submit(http, "legacy", "as a job")
        done = wait_finished(http, [job["id"]])[job["id"]]
        assert done["status"] == "completed", done
        assert done["result"]["choices"][0]["message"]["content"] == fake_chat_answer(
            "as a job")
        # the queued generate API of inferd, on the system's own workers
        answer = http.post("/generate", json={"job_id": "compat-1", "content": "old api",
                                              "meta": {"model": "legacy"}})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"content": fake_chat_answer("old api")}
    # every task left the system's records as its backend leaves them
    ids = task_ids(redis_server)
    assert len(ids) == 5
    for task in ids:
        record = status_of(redis_server, task)
        assert record is not None and record["status"] == "completed"
        assert record["is_completed"] is True
        assert redis_server.client().get(f"job-answer:{task}") is not None
        assert redis_server.client().get(f"prompt:{task}") is not None


def test_keys_limits_and_usage_apply_to_its_workers(
        front: Callable[..., InferdProcess], workers: Workers, queue: str,
        redis_server: RedisServer) -> None:
    workers.start()
    admin = "sk-test-admin-queued-generate-0123"
    server = front(legacy_model(queue, redis_server), INFERD_ADMIN_KEY=admin)
    with httpx.Client(base_url=server.url, timeout=60) as http:
        made = http.post("/admin/v1/keys", json={"rpm": 1, "models": ["legacy"]},
                         headers={"Authorization": f"Bearer {admin}"})
        assert made.status_code in (200, 201), made.text
        key = made.json()["key"]
        body = {"model": "legacy", "messages": [{"role": "user", "content": "metered"}]}
        assert http.post("/v1/chat/completions", json=body).status_code == 401
        headers = {"Authorization": f"Bearer {key}"}
        first = http.post("/v1/chat/completions", json=body, headers=headers)
        assert first.status_code == 200, first.text
        assert first.json()["choices"][0]["message"]["content"] == fake_chat_answer("metered")
        assert http.post("/v1/chat/completions", json=body, headers=headers).status_code == 429
        echo = http.post("/v1/chat/completions", headers=headers,
                         json={**body, "model": "echo"})
        assert echo.status_code == 403  # not on the key's allow-list

        def usage() -> list[dict[str, Any]]:
            records = http.get("/admin/v1/usage/records", params={"limit": 100},
                               headers={"Authorization": f"Bearer {admin}"}).json()["data"]
            return [r for r in records if r["model"] == "legacy" and r["status"] == 200]

        [record] = wait_for(usage, within=60, what="the usage record")
        assert record["completion_tokens"] > 0 and record["prompt_tokens"] > 0
    assert len(task_ids(redis_server)) == 1  # the refused requests published nothing


def test_a_task_its_worker_fails_is_an_error_naming_it(
        front: Callable[..., InferdProcess], workers: Workers, queue: str,
        redis_server: RedisServer) -> None:
    workers.start()
    server = front(legacy_model(queue, redis_server))
    client = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    # the fake model fails a chat at temperature 1
    with pytest.raises(APIStatusError) as failed:
        client.chat.completions.create(model="legacy", temperature=1,
                                       messages=[{"role": "user", "content": "x"}])
    assert failed.value.status_code == 502
    assert "Simulated processing error" in failed.value.message


def test_no_worker_answers_a_504_naming_the_queue_and_the_task(
        front: Callable[..., InferdProcess], queue: str, redis_server: RedisServer) -> None:
    server = front(legacy_model(queue, redis_server, timeout=1.0))
    client = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(APIStatusError) as failed:
        client.chat.completions.create(model="legacy",
                                       messages=[{"role": "user", "content": "anyone?"}])
    assert failed.value.status_code == 504
    assert f"queue '{queue}'" in failed.value.message
    assert "did not answer task" in failed.value.message


def test_no_worker_answers_the_fallback_model_does(
        front: Callable[..., InferdProcess], queue: str, redis_server: RedisServer) -> None:
    server = front(legacy_model(queue, redis_server, timeout=1.0, fallbacks=["echo"]))
    client = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    chat = client.chat.completions.create(model="legacy",
                                          messages=[{"role": "user", "content": "anyone"}])
    assert chat.choices[0].message.content == "anyone"  # the echo model
    assert chat.model == "echo"


def test_a_job_whose_worker_is_killed_mid_task_is_answered_once_by_another(
        front: Callable[..., InferdProcess], workers: Workers, queue: str,
        redis_server: RedisServer) -> None:
    stuck = workers.start("hold")
    server = front(legacy_model(queue, redis_server))
    with httpx.Client(base_url=server.url, timeout=60) as http:
        job = submit(http, "legacy", "survive")
        task = wait_for(lambda: next(iter(task_ids(redis_server)), None), within=60,
                        what="the task published")
        wait_for(lambda: (status_of(redis_server, task) or {}).get("status") == "in_progress",
                 within=60, what="the worker taking the task")
        stuck.kill()
        stuck.wait(10)
        workers.start()  # the broker hands it the unacknowledged task
        done = wait_finished(http, [job["id"]])[job["id"]]
        assert done["status"] == "completed", done
        assert done["attempts"] == 1
        assert done["result"]["choices"][0]["message"]["content"] == fake_chat_answer(
            "survive")
    assert task_ids(redis_server) == [task]  # one task, answered once
    assert workers.generated(task) == 1


def test_a_job_whose_worker_is_killed_fails_at_its_deadline(
        front: Callable[..., InferdProcess], workers: Workers, queue: str,
        redis_server: RedisServer) -> None:
    stuck = workers.start("hold")
    server = front(legacy_model(queue, redis_server))
    with httpx.Client(base_url=server.url, timeout=60) as http:
        job = submit(http, "legacy", "too late", deadline_seconds=10)
        task = wait_for(lambda: next(iter(task_ids(redis_server)), None), within=60,
                        what="the task published")
        wait_for(lambda: (status_of(redis_server, task) or {}).get("status") == "in_progress",
                 within=60, what="the worker taking the task")
        stuck.kill()
        done = wait_finished(http, [job["id"]])[job["id"]]
        assert done["status"] == "failed", done
        assert done["error"]["code"] in ("deadline_exceeded", "upstream_timeout"), done
        assert "deadline" in done["error"]["message"]


def test_an_answer_that_lands_while_inferd_is_down_is_collected_after_its_restart(
        front: Callable[..., InferdProcess], workers: Workers, queue: str,
        redis_server: RedisServer) -> None:
    server = front(legacy_model(queue, redis_server))
    with httpx.Client(base_url=server.url, timeout=60) as http:
        job = submit(http, "legacy", "while you were out")
        task = wait_for(lambda: next(iter(task_ids(redis_server)), None), within=60,
                        what="the task recorded")
        # killed once the broker has the message (the record is written just before it)
        wait_for(lambda: published(redis_server, task), within=60, what="the task published")
    server.kill()
    workers.start()  # answers the task while no inferd runs
    wait_for(lambda: (status_of(redis_server, task) or {}).get("status") == "completed",
             within=60, what="the worker answering")
    server.start()  # the job runs again: its task is collected, not published again
    with httpx.Client(base_url=server.url, timeout=60) as http:
        done = wait_finished(http, [job["id"]])[job["id"]]
    assert done["status"] == "completed", done
    assert done["result"]["choices"][0]["message"]["content"] == fake_chat_answer(
        "while you were out")
    assert task_ids(redis_server) == [task]
    assert workers.generated(task) == 1  # not published a second time


def test_a_task_recorded_whose_message_never_reached_the_queue_is_published_on_its_rerun(
        front: Callable[..., InferdProcess], workers: Workers, queue: str,
        redis_server: RedisServer) -> None:
    """inferd killed after writing a task's record and before the broker confirmed its
    message: the job's next run publishes it (a pending record alone does not mean queued)."""
    server = front(legacy_model(queue, redis_server))
    with httpx.Client(base_url=server.url, timeout=60) as http:
        job = submit(http, "legacy", "lost on the way")
        task = wait_for(lambda: next(iter(task_ids(redis_server)), None), within=60,
                        what="the task recorded")
        wait_for(lambda: published(redis_server, task), within=60, what="the task published")
    server.kill()
    # what a kill between the record and the confirmation leaves: the record, no message
    assert purge(queue) == 1
    redis_server.client().delete(f"inferd-published:{task}")
    assert (status_of(redis_server, task) or {}).get("status") == "pending"
    server.start()  # the job runs again and publishes its task
    workers.start()
    with httpx.Client(base_url=server.url, timeout=60) as http:
        done = wait_finished(http, [job["id"]])[job["id"]]
    assert done["status"] == "completed", done
    assert done["result"]["choices"][0]["message"]["content"] == fake_chat_answer(
        "lost on the way")
    assert task_ids(redis_server) == [task]
    assert workers.generated(task) == 1


def test_a_redis_restart_loses_the_records_and_the_task_is_still_answered(
        front: Callable[..., InferdProcess], workers: Workers, queue: str,
        redis_server: RedisServer) -> None:
    server = front(legacy_model(queue, redis_server))
    with httpx.Client(base_url=server.url, timeout=60) as http:
        job = submit(http, "legacy", "after the restart")
        task = wait_for(lambda: next(iter(task_ids(redis_server)), None), within=60,
                        what="the task published")
        redis_server.stop()  # keeps nothing: the status record is gone
        redis_server.start()
        # the replica writes the pending record again, which the system's worker updates
        wait_for(lambda: status_of(redis_server, task) is not None, within=60,
                 what="the status record written again")
        workers.start()
        done = wait_finished(http, [job["id"]])[job["id"]]
        assert done["status"] == "completed", done
        assert done["result"]["choices"][0]["message"]["content"] == fake_chat_answer(
            "after the restart")


# -- inferd workers behind the system's backend ---------------------------------------------

def backend(queue: str, redis_server: RedisServer, kind: str, job_id: str, text: str,
            ) -> subprocess.Popen[str]:
    """The system's backend publishing a task and waiting for its answer."""
    return subprocess.Popen([str(PROTOLLM_PYTHON), "tests/protollm_backend.py", queue,
                             str(redis_server.port), kind, job_id, text], cwd=ROOT,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def answer_of(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return str(json.loads(out.strip().splitlines()[-1])["content"])


@pytest.fixture
def inferd_workers(start: Callable[..., InferdProcess], cluster_env: dict[str, str],
                   queue: str, redis_server: RedisServer) -> Callable[..., InferdProcess]:
    assert migrate(cluster_env).returncode == 0

    def run(*args: str, **env: str) -> InferdProcess:
        return start("worker", *args, INFERD_QUEUED_GENERATE_QUEUE=queue,
                     INFERD_REDIS_URL=redis_server.url, **env)

    return run


@pytest.mark.slow
def test_its_backend_gets_answers_from_an_inferd_worker_on_the_bundled_model(
        inferd_workers: Callable[..., InferdProcess], queue: str,
        redis_server: RedisServer) -> None:
    worker = inferd_workers("--model", "smollm2-135m-instruct")
    chat = answer_of(backend(queue, redis_server, "chat", "chat-1", "Name a colour."))
    single = answer_of(backend(queue, redis_server, "generate", "gen-1", "Say hello."))
    assert chat.strip() and single.strip()
    assert "Job " not in chat  # not the backend's own timeout or error text
    for job_id in ("chat-1", "gen-1"):
        record = status_of(redis_server, job_id)
        assert record is not None and record["status"] == "completed"
        assert record["is_completed"] is True and record["error"] is None
    assert worker.proc is not None and worker.proc.poll() is None


def test_its_backend_gets_answers_and_errors_from_an_inferd_worker(
        inferd_workers: Callable[..., InferdProcess], queue: str,
        redis_server: RedisServer) -> None:
    inferd_workers("--model", "echo")
    assert answer_of(backend(queue, redis_server, "chat", "c-1", "one two")) == "one two"
    assert answer_of(backend(queue, redis_server, "generate", "g-1", "three")) == "three"
    record = json.loads(redis_server.client().get("job-answer:c-1") or b"{}")
    assert record == {"result": "one two"}


def test_a_task_of_a_killed_inferd_worker_is_run_by_another_and_answered_once(
        inferd_workers: Callable[..., InferdProcess], queue: str,
        redis_server: RedisServer) -> None:
    slow = json.dumps([{"name": "slow", "kind": "echo", "echo_delay": 30}])
    first = inferd_workers("--model", "slow", INFERD_MODELS=slow)
    waiting = backend(queue, redis_server, "chat", "k-1", "again")
    wait_for(lambda: (status_of(redis_server, "k-1") or {}).get("status") == "in_progress",
             within=120, what="the inferd worker taking the task")
    first.kill()
    inferd_workers("--model", "echo")
    assert answer_of(waiting) == "again"
    record = status_of(redis_server, "k-1")
    assert record is not None and record["status"] == "completed"


def test_an_inferd_worker_needs_redis_and_a_hosted_model(
        start: Callable[..., InferdProcess], cluster_env: dict[str, str], queue: str) -> None:
    assert migrate(cluster_env).returncode == 0
    with pytest.raises(RuntimeError, match="INFERD_QUEUED_GENERATE_QUEUE needs"):
        start("worker", "--model", "echo", INFERD_QUEUED_GENERATE_QUEUE=queue)



def test_a_redelivered_task_already_answered_is_not_run_again(
        inferd_workers: Callable[..., InferdProcess], queue: str,
        redis_server: RedisServer) -> None:
    store = redis_server.client()
    final = {"status": "completed", "last_update": "2026-01-01T00:00:00",
             "status_message": None, "is_completed": True, "error": None}
    store.set("job-status:r-1", json.dumps(final))
    store.set("job-answer:r-1", json.dumps({"result": "the first answer"}))
    envelope = {"type": "task", "task": "generate", "args": [], "id": "r-1", "retries": 0,
                "eta": None, "kwargs": {"prompt_type": "chat_completion", "prompt": {
                    "job_id": "r-1", "priority": 1, "source": "local", "meta": {},
                    "messages": [{"role": "user", "content": "a second answer"}]}}}

    async def deliver_unacknowledged() -> None:
        """A worker takes the task and goes away before acknowledging it."""
        connection = await aio_pika.connect(AMQP)
        async with connection:
            channel = await connection.channel()
            declared = await channel.declare_queue(queue, durable=True,
                                                   arguments={"x-max-priority": 5})
            await channel.default_exchange.publish(
                aio_pika.Message(json.dumps(envelope).encode(), priority=1,
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=queue)
            taken = await declared.get(timeout=30)
            assert taken is not None and not taken.redelivered
        # closed unacknowledged: the broker gives it to the next worker, marked redelivered

    async def waiting() -> int:
        connection = await aio_pika.connect(AMQP)
        async with connection:
            channel = await connection.channel()
            declared = await channel.declare_queue(queue, passive=True)
            return int(declared.declaration_result.message_count or 0)

    asyncio.run(deliver_unacknowledged())
    assert asyncio.run(waiting()) == 1
    worker = inferd_workers("--model", "echo")
    wait_for(lambda: "r-1 redelivered after it finished" in worker.log_path.read_text(),
             within=60, what="the worker taking the task")
    assert asyncio.run(waiting()) == 0
    assert json.loads(store.get("job-answer:r-1") or b"{}") == {"result": "the first answer"}
    assert status_of(redis_server, "r-1") == final
