"""A background response is a durable job: it survives ``kill -9`` of ``inferd serve``, any
gateway sharing the database answers for it, its stream resumes from a sequence number, and
only the key that made it can see it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from inferd.settings import bundled_gguf_path
from tests.helpers import InferdProcess

MODEL = "smollm2-135m-instruct"
ADMIN_KEY = "sk-test-admin-responses-0123456789ab"
ENV = {"INFERD_JOB_LEASE_SECONDS": "1.5", "INFERD_JOB_SWEEP_SECONDS": "0.3",
       "INFERD_ADMIN_KEY": ADMIN_KEY, "INFERD_KEY_REFRESH_SECONDS": "0.3"}


def sdk(server: InferdProcess, key: str) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=60)


def new_key(server: InferdProcess) -> str:
    response = httpx.post(server.url + "/admin/v1/keys", json={},
                          headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == 201, response.text
    key: str = response.json()["key"]
    return key


def wait_done(client: OpenAI, response_id: str) -> Any:
    deadline = time.monotonic() + 240
    response = client.responses.retrieve(response_id)
    while response.status in ("queued", "in_progress") and time.monotonic() < deadline:
        time.sleep(0.2)
        response = client.responses.retrieve(response_id)
    return response


# The answer must be a JSON array of at least 301 integers. No token of the bundled model's
# vocabulary holds two digits, so every item takes a token of its own: the grammar cannot let
# the answer end (an end-of-sequence token) before 300 tokens, whatever the model prefers.
ENDLESS = {"format": {"type": "json_schema", "name": "numbers", "strict": True,
                      "schema": {"type": "array", "items": {"type": "integer"},
                                 "minItems": 301}}}


def test_background_response_survives_kill_9(tmp_path: Path) -> None:
    args = ("--no-bundled", "--model", f"{MODEL}={bundled_gguf_path()}")
    server = InferdProcess(tmp_path, *args, env=ENV)
    with server:
        owner_key, other_key = new_key(server), new_key(server)
        owner = sdk(server, owner_key)
        created = owner.responses.create(model=MODEL, input="1, 2, 3, 4, 5, 6,",
                                         background=True, max_output_tokens=300,
                                         temperature=0, text=ENDLESS)
        assert created.status == "queued"
        seen = []
        for event in owner.responses.retrieve(created.id, stream=True):
            seen.append(event)
            if sum(e.type == "response.output_text.delta" for e in seen) >= 2:
                break
        assert owner.responses.retrieve(created.id).status == "in_progress"
        server.kill()
    last_seen = seen[-1].sequence_number

    # the restarted process runs it again; a second gateway on the same database answers too
    with (InferdProcess(tmp_path, *args, port=server.port, env=ENV) as again,
          InferdProcess(tmp_path, *args, env=ENV) as second):
        done = wait_done(sdk(second, owner_key), created.id)
        # the grammar admits no end before 301 items: the run goes to its token limit
        assert done.status == "incomplete", done
        assert done.usage.output_tokens == 300
        assert sdk(again, owner_key).responses.retrieve(created.id).output_text == \
            done.output_text
        resumed = list(sdk(second, owner_key).responses.retrieve(
            created.id, stream=True, starting_after=last_seen))
        numbers = [e.sequence_number for e in resumed]
        assert numbers == sorted(set(numbers)) and numbers[0] > last_seen
        # the second attempt started the response over: its events say so, then all of it
        starts = [i for i, e in enumerate(resumed) if e.type == "response.created"]
        assert starts, [e.type for e in resumed]
        text = "".join(e.delta for e in resumed[starts[-1]:]  # type: ignore[union-attr]
                       if e.type == "response.output_text.delta")
        assert text == done.output_text
        assert resumed[-1].type == "response.incomplete"
        with pytest.raises(openai.NotFoundError):  # another key: no such response
            sdk(second, other_key).responses.retrieve(created.id)
        with pytest.raises(openai.NotFoundError):
            sdk(second, other_key).responses.delete(created.id)
        follow_up = sdk(again, owner_key).responses.create(
            model=MODEL, input="Go on.", previous_response_id=created.id,
            max_output_tokens=4)
        assert follow_up.status in ("completed", "incomplete")
        with pytest.raises(openai.NotFoundError):
            sdk(again, other_key).responses.create(model=MODEL, input="Go on.",
                                                   previous_response_id=created.id,
                                                   max_output_tokens=4)
        # nor does an admin key reach it through its job (no admin override)
        as_owner = {"Authorization": f"Bearer {owner_key}"}
        as_admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        owned = httpx.get(again.url + "/v1/jobs", headers=as_owner).json()["data"]
        job_id = next(j["id"] for j in owned if j["endpoint"] == "/v1/responses")
        assert httpx.get(f"{again.url}/v1/jobs/{job_id}", headers=as_owner).status_code == 200
        for method, path in (("GET", ""), ("GET", "/events"), ("GET", "/webhook_attempts"),
                             ("POST", "/cancel"), ("DELETE", "")):
            refused = httpx.request(method, f"{again.url}/v1/jobs/{job_id}{path}",
                                    headers=as_admin)
            assert refused.status_code == 404, (method, path, refused.text)
            assert refused.json()["error"]["code"] == "job_not_found"
        listed = httpx.get(again.url + "/v1/jobs", params={"limit": 100},
                           headers=as_admin).json()["data"]
        assert job_id not in [j["id"] for j in listed]
        assert httpx.get(f"{again.url}/v1/jobs/{job_id}", headers=as_owner).status_code == 200
