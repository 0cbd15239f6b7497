"""`pip install inferd` alone (no extra) in a fresh venv, from this checkout's own files: the
gateway and the worker run on PostgreSQL, RabbitMQ and Redis and route to an ``http`` replica,
with no machine-learning runtime installed; a model whose engine is an extra is refused at
start with the extra to install.

The venv is made once per module with pip's cache warm (``scripts/setup.sh`` filled it).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from openai import OpenAI

from tests.cluster.conftest import AMQP, submit, wait_finished
from tests.conftest import _pg_exec
from tests.helpers import ROOT, InferdProcess, require_service

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.redis,
              pytest.mark.timeout(1200)]

RUNTIMES = ("torch", "transformers", "diffusers", "llama_cpp", "numpy", "tokenizers")


def _copy_project(dest: Path) -> Path:
    """The files a source distribution of inferd holds: pyproject.toml, README.md, src/."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "src", dest / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return dest


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("base-install")
    project = _copy_project(root / "project")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-compile", "-c",
         str(ROOT / "constraints.txt"), str(project)],
        capture_output=True, text=True, timeout=1000)
    assert done.returncode == 0, done.stdout + done.stderr
    return venv


def _python(venv: Path) -> str:
    return str(venv / "bin" / "python")


def _env(**extra: str) -> dict[str, str]:
    """No path to this checkout's source: the processes run the inferd installed in the venv."""
    return {**os.environ, "PYTHONPATH": "", **extra}


def test_the_base_install_holds_no_engine_runtime(base_venv: Path) -> None:
    probe = ("import importlib.util, json, sys, inferd; print(json.dumps({'file': inferd.__file__,"
             " 'found': [m for m in sys.argv[1:] if importlib.util.find_spec(m)]}))")
    done = subprocess.run([_python(base_venv), "-c", probe, *RUNTIMES], env=_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=True)
    report = json.loads(done.stdout)
    assert report["found"] == []
    assert report["file"].startswith(str(base_venv))  # the installed copy, not src/
    names = subprocess.run([_python(base_venv), "-m", "pip", "list", "--format", "json"],
                           capture_output=True, text=True, timeout=120, check=True).stdout
    installed = {p["name"].lower() for p in json.loads(names)}
    assert not installed & {"torch", "transformers", "diffusers", "llama-cpp-python",
                            "llama_cpp_python", "numpy", "safetensors", "tokenizers"}
    assert {"inferd", "asyncpg", "aio-pika", "redis", "uvicorn"} <= installed


@pytest.fixture
def cluster(base_venv: Path, tmp_path: Path) -> Iterator[Callable[..., InferdProcess]]:
    """Start roles from the base venv against a fresh PostgreSQL database, a RabbitMQ queue
    prefix and a Redis key prefix of their own."""
    for service in ("postgresql", "rabbitmq", "redis"):
        require_service(service)
    name = f"inferd_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_exec(f'CREATE DATABASE "{name}"'))
    prefix = f"base-{uuid.uuid4().hex[:10]}"
    shared = {"INFERD_DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{name}",
              "INFERD_BROKER_URL": AMQP, "INFERD_BROKER_PREFIX": prefix,
              "INFERD_REDIS_URL": "redis://127.0.0.1:6379/0", "INFERD_REDIS_PREFIX": prefix,
              "INFERD_HEALTH_CHECK_INTERVAL": "0.5"}
    procs: list[InferdProcess] = []

    def start(role: str, *args: str, **env: str) -> InferdProcess:
        proc = InferdProcess(tmp_path / f"{role}-{len(procs)}", *args, command=role,
                             env=_env(**shared, **env), python=_python(base_venv))
        procs.append(proc)
        return proc.start()

    try:
        done = subprocess.run([_python(base_venv), "-m", "inferd", "migrate"], cwd=ROOT,
                              env=_env(**shared), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        yield start
    finally:
        for proc in procs:
            proc.stop()
        asyncio.run(_pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        asyncio.run(_delete_queues(prefix))


async def _delete_queues(prefix: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(AMQP)
    async with connection:
        channel = await connection.channel()
        for queue in (f"{prefix}.jobs.echo", f"{prefix}.dead"):
            await channel.queue_delete(queue)
        await channel.exchange_delete(f"{prefix}.dead")


def test_gateway_and_worker_route_to_an_http_replica(
        base_venv: Path, cluster: Callable[..., InferdProcess], tmp_path: Path) -> None:
    # the replica: an OpenAI-compatible server (inferd serve with an echo model, on SQLite)
    upstream = InferdProcess(tmp_path / "upstream", "--no-bundled", python=_python(base_venv),
                             env=_env(INFERD_AUTH="off",
                                      INFERD_MODELS='[{"name": "echo", "kind": "echo"}]'))
    with upstream:
        config = tmp_path / "cluster.yaml"
        config.write_text(yaml.safe_dump({"remote_models": [
            {"name": "echo", "replicas": [{"url": upstream.url + "/v1"}]}]}))
        cluster("worker", "--config", str(config))  # no --model: jobs of every model
        gateway = cluster("gateway", "--config", str(config))
        messages = [{"role": "user", "content": "through the base install"}]
        with OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0) as client, \
                httpx.Client(base_url=gateway.url, timeout=30) as http:
            reply = client.chat.completions.create(model="echo", messages=messages)  # type: ignore[arg-type]
            assert reply.choices[0].message.content == "through the base install"
            stream = client.chat.completions.create(model="echo", messages=messages,  # type: ignore[arg-type]
                                                    stream=True)
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == \
                "through the base install"
            job = submit(http, "echo", "a job for the worker")
            done = wait_finished(http, [job["id"]])[job["id"]]
            assert done["status"] == "completed", done
            assert done["result"]["choices"][0]["message"]["content"] == "a job for the worker"
        # loading a GGUF at run time (the model-host API) is refused in the OpenAI shape
        weights = tmp_path / "weights.gguf"
        weights.write_bytes(b"GGUF")
        refused = httpx.post(upstream.url + "/old/initialize", timeout=30,
                             json={"model": "tiny", "path": str(weights)})
        assert refused.status_code == 400
        assert refused.json() == {"error": {
            "message": "the model 'tiny' needs llama-cpp-python: pip install 'inferd[llamacpp]'",
            "type": "invalid_request_error", "param": "model", "code": "engine_not_installed"}}


@pytest.mark.parametrize(("role", "model", "message"), [
    ("serve", "tiny={gguf}",
     "the model 'tiny' needs llama-cpp-python: pip install 'inferd[llamacpp]'"),
    ("engine", "vec={gguf},kind=embeddings",
     "the model 'vec' needs torch: pip install 'inferd[embeddings]'"),
    ("serve", "sd={gguf},kind=diffusers",
     "the model 'sd' needs torch: pip install 'inferd[images]'"),
])
def test_a_model_whose_extra_is_missing_is_refused_at_start(
        base_venv: Path, tmp_path: Path, role: str, model: str, message: str) -> None:
    weights = tmp_path / "weights.gguf"
    weights.write_bytes(b"GGUF")
    done = subprocess.run(
        [_python(base_venv), "-m", "inferd", role, "--no-bundled", "--data-dir",
         str(tmp_path / "data"), "--model", model.format(gguf=weights)],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == f"Error: {message}"
    assert "Traceback" not in done.stdout + done.stderr


def test_traces_asked_for_without_the_tracing_extra_are_refused_at_start(
        base_venv: Path, tmp_path: Path) -> None:
    names = subprocess.run([_python(base_venv), "-m", "pip", "list", "--format", "json"],
                           capture_output=True, text=True, timeout=120, check=True).stdout
    installed = {p["name"].lower() for p in json.loads(names)}
    assert "opentelemetry-api" in installed  # the API only: the SDK is the extra
    assert not installed & {"opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http"}
    done = subprocess.run(
        [_python(base_venv), "-m", "inferd", "serve", "--no-bundled", "--data-dir",
         str(tmp_path / "data")], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env=_env(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318"))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "Error: OTEL_EXPORTER_OTLP_ENDPOINT is set but the OpenTelemetry SDK is not "
        "installed: pip install 'inferd[tracing]'")
    assert "Traceback" not in done.stdout + done.stderr
