"""The ``inferd`` command line: serving another GGUF by name, listing models, migrating."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from inferd.settings import bundled_gguf_path
from tests.helpers import ROOT, InferdProcess

GGUF = bundled_gguf_path()
pytestmark = pytest.mark.skipif(not GGUF, reason="the bundled model package is not installed")


def inferd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "inferd", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})})


def test_models_lists_what_would_be_served() -> None:
    result = inferd("models", "--model", f"other={GGUF},n_ctx=1024,threads=1")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    names = [r["name"] for r in rows]
    assert names == ["smollm2-135m-instruct", "all-minilm-l6-v2", "other"]
    assert rows[-1]["n_ctx"] == 1024 and rows[-1]["n_threads"] == 1


def test_bad_model_option_is_a_clear_error() -> None:
    result = inferd("serve", "--model", "nopath")
    assert result.returncode != 0
    assert "NAME=PATH" in result.stderr
    result = inferd("serve", "--model", "x=/does/not/exist.gguf")
    assert result.returncode != 0
    assert "does not exist" in result.stderr


def test_a_typo_in_the_config_file_stops_serve_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "inferd.yaml"
    config.write_text("bundled_models: false\njobs:\n  concurency: 2\n")
    result = inferd("serve", "--config", str(config))
    assert result.returncode != 0
    assert "unknown key 'jobs.concurency'" in result.stderr and str(config) in result.stderr


def test_serve_a_gguf_under_another_name(tmp_path: Path) -> None:
    with InferdProcess(tmp_path, "--no-bundled", "--model",
                       f"my-model={GGUF},n_ctx=1024,threads=2") as server:
        models = httpx.get(server.url + "/v1/models").json()["data"]
        assert [(m["id"], m["context_length"]) for m in models] == [("my-model", 1024)]
        client = OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        answer = client.chat.completions.create(
            model="my-model", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content


def test_serve_threads_reach_a_gguf_given_by_path(tmp_path: Path) -> None:
    """``--threads`` is the llama.cpp thread count of every ``--model`` without ``threads=``."""
    with InferdProcess(tmp_path, "--no-bundled", "--threads", "2",
                       "--model", f"plain={GGUF},n_ctx=256,parallel=1",
                       "--model", f"own={GGUF},n_ctx=256,parallel=1,threads=1") as server:
        engines = httpx.get(server.url + "/admin/v1/engines", timeout=30).json()["data"]
        assert {e["id"]: e["n_threads"] for e in engines} == {"plain": 2, "own": 1}


def test_serve_from_config_file_and_environment(tmp_path: Path) -> None:
    config = tmp_path / "inferd.yaml"
    config.write_text(f"bundled_models: false\nmodels:\n  - name: from-file\n    path: {GGUF}\n"
                      "    n_ctx: 512\n    aliases: [ff]\n")
    env = {"INFERD_CONFIG": str(config),
           "INFERD_MODELS": json.dumps([{"name": "from-env", "kind": "echo"}])}
    with InferdProcess(tmp_path, env=env) as server:
        ids = {m["id"] for m in httpx.get(server.url + "/v1/models").json()["data"]}
        assert ids == {"from-env"}  # the environment overrides the file's model list
    # same data directory: the model of the first run is no longer offered
    with InferdProcess(tmp_path, env={"INFERD_CONFIG": str(config)}) as server:
        models = httpx.get(server.url + "/v1/models").json()["data"]
        assert [(m["id"], m["context_length"]) for m in models] == [("from-file", 512)]
        # a generous read timeout: httpx's 5 s default is not enough on a loaded machine
        alias = httpx.post(server.url + "/v1/chat/completions", timeout=120, json={
            "model": "ff", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]})
        assert alias.status_code == 200, alias.text


def test_migrate_command(tmp_path: Path) -> None:
    result = inferd("migrate", env={"INFERD_DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "inferd.db").exists()
