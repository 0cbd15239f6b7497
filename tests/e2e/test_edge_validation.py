"""Validation at the edge and key identity, through ``inferd serve`` on SQLite, PostgreSQL and
MariaDB: the same answer on every database.

- A new key never sees a deleted key's jobs, files or contexts (ids are never reused).
- Values a database column cannot hold (NaN, a NUL, an ``rpm`` of 2^31, a deadline of 1e300,
  nesting 1,000 deep) are a 400 ``invalid_request_error`` naming the field, never a 500.
- Hostile request ids and model names do not stop usage metering.
- Display prefixes reveal at most a few characters of a key; the last admin key stays; a key
  given twice in a control-plane body is refused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import DATABASES, fresh_database
from tests.helpers import InferdProcess, wait_for

ADMIN_KEY = "sk-test-admin-edge-0123456789abcdef"
MODELS = json.dumps([{"name": "echo", "kind": "echo"}])
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hello there"}]}


@pytest.fixture(scope="module", params=DATABASES)
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferdProcess]:
    data = tmp_path_factory.mktemp(f"edge-{request.param}")
    with fresh_database(request.param, data) as url:
        env = {"INFERD_MODELS": MODELS, "INFERD_ADMIN_KEY": ADMIN_KEY,
               "INFERD_DATABASE_URL": url, "INFERD_KEY_REFRESH_SECONDS": "0.3",
               "INFERD_USAGE_FLUSH_SECONDS": "0.2"}
        with InferdProcess(data, "--no-bundled", env=env) as proc:
            yield proc


def client(server: InferdProcess, key: str = ADMIN_KEY) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"},
                        timeout=60)


def new_key(admin: httpx.Client, **spec: Any) -> dict[str, Any]:
    response = admin.post("/admin/v1/keys", json=spec)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def refused(response: httpx.Response, param: str | None, code: str | None = None) -> None:
    assert response.status_code == 400, (response.status_code, response.text)
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error


def test_a_new_key_sees_none_of_a_deleted_keys_objects(server: InferdProcess) -> None:
    with client(server) as admin:
        old = new_key(admin, name="C")
        with client(server, old["key"]) as c:
            job = c.post("/v1/jobs", json={"endpoint": "/v1/chat/completions", "body": CHAT})
            assert job.status_code == 202, job.text
            upload = c.post("/v1/files", data={"purpose": "batch"}, files={
                "file": ("in.jsonl", b'{"custom_id": "1", "method": "POST", "url": '
                                     b'"/v1/chat/completions", "body": {"model": "echo"}}\n')})
            assert upload.status_code == 200, upload.text
            context = c.post("/contexts/", json={"content": "a stored prompt"})
            assert context.status_code == 200, context.text
        assert admin.delete(f"/admin/v1/keys/{old['id']}").status_code == 200
        new = new_key(admin, name="D")
        assert new["id"] != old["id"]
        job_id, file_id, context_id = job.json()["id"], upload.json()["id"], context.json()["id"]
        with client(server, new["key"]) as d:
            for path in (f"/v1/jobs/{job_id}", f"/v1/files/{file_id}",
                         f"/v1/files/{file_id}/content", f"/contexts/{context_id}"):
                response = d.get(path)
                assert response.status_code == 404, (path, response.text)
            assert d.get("/v1/jobs").json()["data"] == []
            assert d.get("/v1/files").json()["data"] == []
            assert d.get("/contexts/").json() == []
        # a deleted key's objects stay, for admins (and retention)
        assert admin.get(f"/v1/jobs/{job_id}").status_code == 200
        assert admin.get(f"/contexts/{context_id}").json()["content"] == "a stored prompt"


def test_values_no_column_holds_are_400s_naming_the_field(server: InferdProcess) -> None:
    with client(server) as admin:
        user = new_key(admin, name="hostile")
        job = {"endpoint": "/v1/chat/completions", "body": CHAT}
        with client(server, user["key"]) as c:
            refused(c.post("/v1/jobs", json={**job, "deadline_seconds": 1e300}),
                    "deadline_seconds")
            nan = (b'{"endpoint": "/v1/chat/completions", "body": {"model": "echo", '
                   b'"temperature": NaN, "messages": [{"role": "user", "content": "x"}]}}')
            refused(c.post("/v1/jobs", content=nan), "body.temperature")
            infinite = nan.replace(b"NaN", b"1e400")
            refused(c.post("/v1/jobs", content=infinite), "body.temperature")
            deep = b'{"model": "echo", "messages": [], "x": ' + b"[" * 1000 + b"]" * 1000 + b"}"
            refused(c.post("/v1/chat/completions", content=deep,
                           headers={"Prefer": "respond-async"}), "x" + "[0]" * 63,
                    "invalid_json")
            refused(c.post("/v1/jobs", content=b'{"endpoint": "/v1/chat/completions", '
                           b'"body": {"model": "echo", "x": ' + b"[" * 100 + b"]" * 100 + b"}}"),
                    "body.x" + "[0]" * 62, "invalid_json")
            refused(c.post("/contexts/", json={"content": "a\x00b"}), "content")
            jobs = c.get("/v1/jobs")
            assert jobs.status_code == 200 and jobs.json()["data"] == []  # nothing stored
        refused(admin.post("/admin/v1/keys", json={"name": "a\x00b"}), "name")
        refused(admin.post("/admin/v1/keys", json={"rpm": 2**31}), "rpm")
        refused(admin.patch(f"/admin/v1/keys/{user['id']}", json={"tpm": 2**31}), "tpm")
        refused(admin.post("/admin/v1/keys", json={"expires_in": 1e300}), "expires_in")
        refused(admin.post("/generate_api_key", json={"user_id": "u", "allowed_rpm": 2**40}),
                "allowed_rpm")
        assert admin.get("/v1/jobs").status_code == 200


def test_hostile_request_ids_and_model_names_leave_metering_working(
        server: InferdProcess) -> None:
    with client(server) as admin:
        user = new_key(admin, name="metered")
        with client(server, user["key"]) as c:
            long_id = "x" * 200
            answer = c.post("/v1/chat/completions", json=CHAT, headers={"X-Request-ID": long_id})
            assert answer.status_code == 200
            replaced = answer.headers["x-request-id"]
            assert replaced != long_id and 1 <= len(replaced) <= 64
            control = c.post("/v1/chat/completions", json=CHAT,
                             headers={"X-Request-ID": "tab\there"})
            assert control.headers["x-request-id"] != "tab\there"
            refused(c.post("/v1/chat/completions", json={**CHAT, "model": "bad\x00model"}),
                    "model")
            refused(c.post("/v1/chat/completions", json={**CHAT, "model": "m" * 300}), "model")
            refused(c.post("/v1/embeddings", json={"model": "e\x00", "input": "x"}), "model")
            after = c.post("/v1/chat/completions", json=CHAT,
                           headers={"X-Request-ID": "after-the-hostile-ones"})
            assert after.headers["x-request-id"] == "after-the-hostile-ones"

        def recorded() -> list[dict[str, Any]]:
            rows: list[dict[str, Any]] = admin.get(
                "/admin/v1/usage/records", params={"key_id": str(user["id"])}).json()["data"]
            return rows if any(r["request_id"] == "after-the-hostile-ones" for r in rows) else []

        rows = wait_for(recorded, what="the last request's usage record")
        assert replaced in {r["request_id"] for r in rows}
        assert "inferd_usage_records_rejected 0.0" in admin.get("/metrics").text


def test_display_prefixes_show_a_few_characters(server: InferdProcess) -> None:
    with client(server) as admin:
        created = new_key(admin, name="shown")
        assert created["prefix"] == created["key"][:len("sk-inferd-") + 4]
        keys = admin.get("/admin/v1/keys").json()["data"]
        env = next(k for k in keys if k["name"] == "INFERD_ADMIN_KEY")
        assert env["prefix"] == ADMIN_KEY[:4]
        rows = admin.get("/tables/api_keys").json()["data"]
        assert {r["prefix"] for r in rows} == {k["prefix"] for k in keys}
        for body in (admin.get("/admin/v1/keys").text, admin.get("/tables/api_keys").text):
            assert ADMIN_KEY[:8] not in body and created["key"][:16] not in body


def test_the_last_admin_key_stays(server: InferdProcess) -> None:
    with client(server) as admin:
        keys = admin.get("/admin/v1/keys").json()["data"]
        env = next(k for k in keys if k["name"] == "INFERD_ADMIN_KEY")
        assert [k["id"] for k in keys if k["scope"] == "admin" and k["enabled"]] == [env["id"]]
        for response in (admin.delete(f"/admin/v1/keys/{env['id']}"),
                         admin.post(f"/admin/v1/keys/{env['id']}/disable"),
                         admin.patch(f"/admin/v1/keys/{env['id']}", json={"scope": "user"}),
                         admin.patch(f"/admin/v1/keys/{env['id']}",
                                     json={"expires_at": time.time() - 60})):
            assert response.status_code == 409, response.text
            error = response.json()["error"]
            assert error["code"] == "last_admin_key" and "last" in error["message"]
        assert admin.get("/admin/v1/keys").status_code == 200  # still an admin
        # with a second admin key, either may go
        second = new_key(admin, name="second admin", scope="admin")
        assert admin.delete(f"/admin/v1/keys/{second['id']}").status_code == 200


def test_a_key_given_twice_is_refused_in_control_plane_bodies(server: InferdProcess) -> None:
    with client(server) as admin:
        refused(admin.post("/admin/v1/keys", content=b'{"name": "twice", "scope": "user", '
                                                     b'"scope": "admin"}'),
                "scope", "duplicate_key")
        assert all(k["name"] != "twice" for k in admin.get("/admin/v1/keys").json()["data"])
        refused(admin.post("/v1/jobs", content=b'{"endpoint": "/v1/chat/completions", '
                                               b'"body": {"model": "echo", "model": "x"}}'),
                "model", "duplicate_key")
