"""Per-key storage quotas end to end: ``inferd serve`` with a default quota from the settings,
keys with their own (admin API), the official openai SDK as client for files and stored
responses, the contexts-and-results API's ``/contexts/``; the key's GET shows what it stores."""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.helpers import InferdProcess, wait_for

ADMIN_KEY = "sk-test-admin-storage-0123456789abcdef"
DEFAULT_BYTES = 4096


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferdProcess]:
    env = {"INFERD_MODELS": json.dumps([{"name": "echo", "kind": "echo"}]),
           "INFERD_ADMIN_KEY": ADMIN_KEY, "INFERD_KEY_REFRESH_SECONDS": "0.3",
           "INFERD_STORAGE_QUOTA_BYTES": str(DEFAULT_BYTES),
           "INFERD_STORAGE_QUOTA_OBJECTS": "1000"}
    with InferdProcess(tmp_path_factory.mktemp("storage"), "--no-bundled", env=env) as proc:
        yield proc


@pytest.fixture(scope="module")
def admin(server: InferdProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60,
                      headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as c:
        yield c


def new_key(server: InferdProcess, admin: httpx.Client, **fields: Any) -> tuple[
        dict[str, Any], openai.OpenAI]:
    created = admin.post("/admin/v1/keys", json={"name": "storage", **fields})
    assert created.status_code == 201, created.text
    key: dict[str, Any] = created.json()
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=key["key"], max_retries=0,
                           timeout=60)
    wait_for(lambda: httpx.get(server.url + "/v1/models", headers={
        "Authorization": f"Bearer {key['key']}"}).status_code == 200)
    return key, client


def upload(client: openai.OpenAI, size: int) -> str:
    return client.files.create(file=("data.bin", b"x" * size), purpose="user_data").id


def test_files_past_the_keys_object_quota_get_429_and_deleting_gives_room(
        server: InferdProcess, admin: httpx.Client) -> None:
    key, client = new_key(server, admin, storage_objects=2)
    first = upload(client, 10)
    upload(client, 20)
    with pytest.raises(openai.RateLimitError) as refused:
        upload(client, 1)
    assert refused.value.code == "storage_quota_exceeded"
    assert "2 of its 2 objects" in refused.value.message
    shown = admin.get(f"/admin/v1/keys/{key['id']}").json()
    assert shown["storage_objects"] == 2 and shown["storage_bytes"] is None
    assert shown["storage"] == {"bytes": 30, "objects": 2, "quota_bytes": DEFAULT_BYTES,
                                "quota_objects": 2}
    client.files.delete(first)
    upload(client, 1)
    assert admin.get(f"/admin/v1/keys/{key['id']}").json()["storage"]["bytes"] == 21


def test_the_default_bytes_quota_413_for_one_too_large_and_429_for_the_total(
        server: InferdProcess, admin: httpx.Client) -> None:
    _, client = new_key(server, admin)
    with pytest.raises(openai.APIStatusError) as too_large:
        upload(client, DEFAULT_BYTES + 1)
    assert too_large.value.status_code == 413
    assert too_large.value.code == "object_too_large"
    upload(client, 3000)
    with pytest.raises(openai.RateLimitError) as full:
        upload(client, 2000)
    assert full.value.code == "storage_quota_exceeded"


def test_an_admin_changes_a_keys_quota(server: InferdProcess, admin: httpx.Client) -> None:
    key, client = new_key(server, admin, storage_bytes=100)
    with pytest.raises(openai.APIStatusError):
        upload(client, 200)
    changed = admin.patch(f"/admin/v1/keys/{key['id']}", json={"storage_bytes": 1000})
    assert changed.status_code == 200 and changed.json()["storage_bytes"] == 1000
    wait_for(lambda: _uploaded(client, 200))


def _uploaded(client: openai.OpenAI, size: int) -> bool:
    try:
        upload(client, size)
    except openai.APIStatusError:
        return False
    return True


def test_parallel_uploads_cannot_pass_the_quota(server: InferdProcess,
                                                admin: httpx.Client) -> None:
    key, client = new_key(server, admin, storage_objects=3)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: _uploaded(client, 5), range(12)))
    assert sum(results) == 3
    assert len(client.files.list().data) == 3
    assert admin.get(f"/admin/v1/keys/{key['id']}").json()["storage"]["objects"] == 3


def test_contexts_are_counted(server: InferdProcess, admin: httpx.Client) -> None:
    key, _ = new_key(server, admin, storage_objects=1)
    headers = {"Authorization": f"Bearer {key['key']}"}
    first = httpx.post(server.url + "/contexts/", json={"content": "a prompt"}, headers=headers)
    assert first.status_code == 200, first.text
    second = httpx.post(server.url + "/contexts/", json={"content": "another"},
                        headers=headers)
    assert second.status_code == 429
    error = second.json()["error"]
    assert error["code"] == "storage_quota_exceeded" and error["type"] == "rate_limit_error"
    assert set(error) == {"message", "type", "param", "code"}
    assert admin.get(f"/admin/v1/keys/{key['id']}").json()["storage"]["bytes"] == 8


def test_stored_responses_are_counted_and_refused_before_they_run(
        server: InferdProcess, admin: httpx.Client) -> None:
    key, client = new_key(server, admin, storage_objects=1)
    kept = client.responses.create(model="echo", input="remember this")
    with pytest.raises(openai.RateLimitError) as refused:
        client.responses.create(model="echo", input="and this")
    assert refused.value.code == "storage_quota_exceeded"
    # not stored: no room needed
    assert client.responses.create(model="echo", input="just answer", store=False).output
    assert admin.get(f"/admin/v1/keys/{key['id']}").json()["storage"]["objects"] == 1
    client.responses.delete(kept.id)
    assert client.responses.create(model="echo", input="room again").id
