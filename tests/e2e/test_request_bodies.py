"""The bodies in the request log end to end: ``inferd serve`` as a subprocess under each
``INFERD_REQUEST_LOG_REDACT``, chat requests (plain, streamed, refused) made with the official
``openai`` SDK by a key with ``log_bodies`` and one without, read back through
``/admin/v1/requests`` and ``/v1/requests``; the setting on and off through the admin API and
``inferd keys``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.helpers import ROOT, InferdProcess

ADMIN_KEY = "sk-test-admin-bodies-0123456789abcdef"
MODELS = json.dumps([{"name": "echo", "kind": "echo"}, {"name": "echo2", "kind": "echo"}])
SECRET = "reach me at jane.doe@example.com, card 4111 1111 1111 1111"


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, (response.status_code, response.text)
    return response.json()


@pytest.fixture(scope="module", params=["mask", "none", "hash", "drop"])
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InferdProcess, str]]:
    mode = str(request.param)
    env = {"INFERD_MODELS": MODELS, "INFERD_ADMIN_KEY": ADMIN_KEY,
           "INFERD_REQUEST_LOG_REDACT": mode}
    with InferdProcess(tmp_path_factory.mktemp(f"bodies-{mode}"), "--no-bundled",
                       env=env) as process:
        yield process, mode


def by_id(client: httpx.Client, path: str) -> dict[str, dict[str, Any]]:
    page = ok(client.get(path, params={"limit": 100}))
    assert not page["has_more"]
    return {r["request_id"]: r for r in page["data"]}


def test_bodies_of_a_key_that_keeps_them(server: tuple[InferdProcess, str]) -> None:
    process, mode = server
    with httpx.Client(base_url=process.url, timeout=60,
                      headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as admin:
        keeps = ok(admin.post("/admin/v1/keys", json={"name": "keeps", "models": ["echo"],
                                                      "log_bodies": True}), 201)
        plain = ok(admin.post("/admin/v1/keys", json={"name": "plain"}), 201)
        assert keeps["log_bodies"] is True and plain["log_bodies"] is False
        messages: Any = [{"role": "user", "content": SECRET}]
        sdk = openai.OpenAI(base_url=process.url + "/v1", api_key=keeps["key"], max_retries=0)
        answer = sdk.chat.completions.create(model="echo", messages=messages, max_tokens=32,
                                             extra_headers={"X-Request-ID": "b-sync"})
        streamed = list(sdk.chat.completions.create(
            model="echo", messages=messages, max_tokens=32, stream=True,
            stream_options={"include_usage": True}, extra_headers={"X-Request-ID": "b-stream"}))
        with pytest.raises(openai.PermissionDeniedError):
            sdk.chat.completions.create(model="echo2", messages=messages,
                                        extra_headers={"X-Request-ID": "b-denied"})
        other = openai.OpenAI(base_url=process.url + "/v1", api_key=plain["key"],
                              max_retries=0)
        other.chat.completions.create(model="echo", messages=messages, max_tokens=8,
                                      extra_headers={"X-Request-ID": "b-plain"})
        rows = by_id(admin, "/admin/v1/requests")
        # a key without log_bodies: never a body
        assert rows["b-plain"]["request_body"] is None
        assert rows["b-plain"]["response_body"] is None
        sync, stream, denied = rows["b-sync"], rows["b-stream"], rows["b-denied"]
        text = answer.choices[0].message.content or ""
        streamed_text = "".join(c.choices[0].delta.content or "" for c in streamed
                                if c.choices)
        assert streamed_text == text and SECRET in text  # the echo engine repeats it
        if mode == "drop":
            for row in (sync, stream, denied):
                assert row["request_body"] is None and row["response_body"] is None
        elif mode == "hash":
            for row in (sync, stream, denied):
                assert row["request_body"].startswith("sha256:")
                assert len(row["request_body"]) == len("sha256:") + 64
                assert row["response_body"].startswith("sha256:")
            # the same request, the same digest (unlike bodies, different ones)
            again = sdk.chat.completions.create(model="echo", messages=messages, max_tokens=32,
                                                extra_headers={"X-Request-ID": "b-again"})
            assert again.choices[0].message.content == text
            twice = by_id(admin, "/admin/v1/requests")["b-again"]
            assert twice["request_body"] == sync["request_body"] != stream["request_body"]
            assert sync["response_body"] != stream["response_body"]
            assert "jane" not in json.dumps(twice)
        else:
            asked = json.loads(sync["request_body"])
            assert asked["model"] == "echo" and asked["max_tokens"] == 32
            got = json.loads(sync["response_body"])
            assert got["id"] == answer.id and got["usage"]["completion_tokens"] == (
                answer.usage.completion_tokens if answer.usage else None)
            assembled = json.loads(stream["response_body"])
            assert assembled["object"] == "chat.completion"
            assert json.loads(stream["request_body"])["stream"] is True
            error = json.loads(denied["response_body"])
            assert error["error"]["code"] == "model_not_allowed"
            said = asked["messages"][0]["content"]
            content = got["choices"][0]["message"]["content"]
            streamed_content = assembled["choices"][0]["message"]["content"]
            if mode == "none":
                assert said == SECRET and content == text and streamed_content == text
            else:  # mask
                masked = "reach me at [email], card [card]"
                assert said == masked
                assert content == text.replace(SECRET, masked) == streamed_content
                for row in (sync, stream, denied):
                    assert "jane.doe" not in row["request_body"] + row["response_body"]
                    assert "4111" not in row["request_body"] + row["response_body"]
        # the key's own list shows its bodies as the admin's does
        with httpx.Client(base_url=process.url, timeout=60,
                          headers={"Authorization": f"Bearer {keeps['key']}"}) as mine:
            own = by_id(mine, "/v1/requests")
        assert own["b-sync"]["request_body"] == sync["request_body"]
        # off again: the next requests keep no body
        changed = ok(admin.patch(f"/admin/v1/keys/{keeps['id']}", json={"log_bodies": False}))
        assert changed["log_bodies"] is False
        # a change of another field leaves it as it is
        assert ok(admin.patch(f"/admin/v1/keys/{plain['id']}",
                              json={"rpm": 1000}))["log_bodies"] is False
        sdk.chat.completions.create(model="echo", messages=messages, max_tokens=8,
                                    extra_headers={"X-Request-ID": "b-after"})
        after = by_id(admin, "/admin/v1/requests")["b-after"]
        assert after["request_body"] is None and after["response_body"] is None
        assert ok(admin.patch(f"/admin/v1/keys/{keeps['id']}",
                              json={"log_bodies": None}))["log_bodies"] is False


def inferd(data: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "inferd", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src"),
                               "INFERD_DATA_DIR": str(data)})
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def test_keys_command_sets_log_bodies(tmp_path: Path) -> None:
    created = inferd(tmp_path, "keys", "create", "--name", "cli", "--log-bodies")
    assert created["log_bodies"] is True
    key_id = str(created["id"])
    assert inferd(tmp_path, "keys", "update", "--rpm", "10", key_id)["log_bodies"] is True
    assert inferd(tmp_path, "keys", "update", "--no-log-bodies", key_id)["log_bodies"] is False
    assert inferd(tmp_path, "keys", "get", key_id)["log_bodies"] is False
    assert inferd(tmp_path, "keys", "create", "--name", "default")["log_bodies"] is False
