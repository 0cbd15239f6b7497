"""Image generation end to end: ``inferd serve`` serving the tiny random-weight pipeline from
its folder (``kind: diffusers``), the official openai SDK as client.

Pictures are checked with Pillow; determinism by seed; ``url`` answers readable by their key
only; keys' allow-lists, rpm and ipm; usage counting images and steps; image jobs with step
progress and cancellation; the Batch API; the image backend's ``/model/generate``.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from PIL import Image

from tests.helpers import ROOT, InferdProcess, free_port, wait_for
from tests.openapi_ref import validate

ADMIN_KEY = "sk-test-admin-images-0123456789abcdef"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory,
           tiny_pipeline: Path) -> Iterator[InferdProcess]:
    tmp = tmp_path_factory.mktemp("images")
    config = tmp / "inferd.yaml"
    config.write_text(yaml.safe_dump({"models": [
        {"name": "tiny-sd", "kind": "diffusers", "path": str(tiny_pipeline), "steps": 3,
         "size": "64x64", "aliases": ["sd"], "max_steps": 500},  # long runs to cancel
        {"name": "echo", "kind": "echo"}]}))
    env = {"INFERD_ADMIN_KEY": ADMIN_KEY, "INFERD_KEY_REFRESH_SECONDS": "0.3",
           "INFERD_USAGE_FLUSH_SECONDS": "0.2", "INFERD_JOB_EVENT_FLUSH_SECONDS": "0"}
    with InferdProcess(tmp, "--config", str(config), "--no-bundled", env=env) as proc:
        yield proc


@pytest.fixture(scope="module")
def admin(server: InferdProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120,
                      headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as c:
        yield c


@pytest.fixture(scope="module")
def sdk(server: InferdProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url + "/v1", api_key=ADMIN_KEY, max_retries=0,
                       timeout=120) as c:
        yield c


def create_key(admin: httpx.Client, **limits: Any) -> dict[str, Any]:
    created = admin.post("/admin/v1/keys", json={"name": "images", **limits})
    assert created.status_code in (200, 201), created.text
    key: dict[str, Any] = created.json()
    return key


def new_key(admin: httpx.Client, **limits: Any) -> str:
    return str(create_key(admin, **limits)["key"])


def picture(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image




def test_sdk_gets_real_pictures_of_each_size_and_format(sdk: openai.OpenAI) -> None:
    for size, fmt, pil in (("64x64", "png", "PNG"), ("128x64", "jpeg", "JPEG"),
                           ("64x96", "webp", "WEBP")):
        result = sdk.images.generate(model="tiny-sd", prompt="a lighthouse", size=size,  # type: ignore[arg-type]
                                     output_format=fmt, n=2)  # type: ignore[arg-type]
        assert result.data is not None and len(result.data) == 2
        for item in result.data:
            assert item.b64_json is not None
            image = picture(base64.b64decode(item.b64_json))
            assert image.format == pil and f"{image.width}x{image.height}" == size
        assert result.usage is not None
        validate("ImagesResponse", result.model_dump(exclude_none=True))


def test_same_seed_same_picture(sdk: openai.OpenAI) -> None:
    def draw(seed: int) -> str:
        result = sdk.images.generate(model="sd", prompt="a fox", extra_body={"seed": seed})
        assert result.data is not None and result.data[0].b64_json is not None
        return result.data[0].b64_json

    assert draw(11) == draw(11)
    assert draw(11) != draw(12)


def test_models_lists_the_image_model(sdk: openai.OpenAI) -> None:
    models = {m.id: m for m in sdk.models.list().data}
    assert (models["tiny-sd"].model_extra or {}).get("capabilities") == ["images"]


def test_url_answers_are_readable_by_their_key_only(server: InferdProcess,
                                                    admin: httpx.Client) -> None:
    owner, other = new_key(admin), new_key(admin)
    with openai.OpenAI(base_url=server.url + "/v1", api_key=owner, max_retries=0) as sdk:
        result = sdk.images.generate(model="tiny-sd", prompt="a boat", response_format="url",
                                     output_format="jpeg")  # type: ignore[arg-type]
    assert result.data is not None and result.data[0].url is not None
    url = result.data[0].url
    validate("ImagesResponse", result.model_dump(exclude_none=True))
    assert url.startswith(server.url + "/v1/images/") and url.endswith("/content")
    mine = httpx.get(url, headers={"Authorization": f"Bearer {owner}"})
    assert mine.status_code == 200 and mine.headers["content-type"] == "image/jpeg"
    assert picture(mine.content).size == (64, 64)
    theirs = httpx.get(url, headers={"Authorization": f"Bearer {other}"})
    assert theirs.status_code == 404
    assert theirs.json()["error"]["code"] == "image_not_found"
    # nor through the files API, not even for an admin
    image_id = url.split("/")[-2]
    for key in (owner, ADMIN_KEY):
        auth = {"Authorization": f"Bearer {key}"}
        assert httpx.get(f"{server.url}/v1/files/{image_id}/content",
                         headers=auth).status_code == 404
        listed = httpx.get(f"{server.url}/v1/files", headers=auth).json()["data"]
        assert image_id not in {f["id"] for f in listed}


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"model": "tiny-sd", "prompt": "x", "size": "65x64"}, 400, "size"),
    ({"model": "tiny-sd", "prompt": "x", "size": "huge"}, 400, "size"),
    ({"model": "tiny-sd", "prompt": "x", "n": 0}, 400, "n"),
    ({"model": "tiny-sd"}, 400, "prompt"),
    ({"model": "tiny-sd", "prompt": "x", "frobnicate": True}, 400, "frobnicate"),
    ({"model": "echo", "prompt": "x"}, 400, "model"),
    ({"model": "nope", "prompt": "x"}, 404, "model"),
])
def test_bad_requests_get_openai_errors(admin: httpx.Client, body: dict[str, Any], status: int,
                                        param: str) -> None:
    response = admin.post("/v1/images/generations", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param


def test_a_chat_request_to_the_image_model_is_refused(admin: httpx.Client) -> None:
    response = admin.post("/v1/chat/completions", json={
        "model": "tiny-sd", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unsupported_model_operation"


def test_keys_allow_list_rpm_and_ipm_apply(server: InferdProcess, admin: httpx.Client) -> None:
    def post(key: str, n: int = 1) -> httpx.Response:
        return httpx.post(server.url + "/v1/images/generations", timeout=60,
                          headers={"Authorization": f"Bearer {key}"},
                          json={"model": "tiny-sd", "prompt": "a tree", "n": n})

    echo_only = new_key(admin, models=["echo"])
    refused = post(echo_only)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"
    created = create_key(admin, ipm=3)
    assert created["ipm"] == 3
    assert admin.get(f"/admin/v1/keys/{created['id']}").json()["ipm"] == 3
    ipm = created["key"]
    assert post(ipm, n=2).status_code == 200
    over = post(ipm, n=2)  # a third and fourth picture in the same minute
    assert over.status_code == 429, over.text
    assert "images per minute" in over.json()["error"]["message"]
    assert int(over.headers["retry-after"]) >= 1
    rpm = new_key(admin, rpm=1)
    assert post(rpm).status_code == 200
    assert post(rpm).status_code == 429


def test_usage_counts_images_and_steps(server: InferdProcess, admin: httpx.Client) -> None:
    created = create_key(admin)
    key_id = created["id"]
    response = httpx.post(server.url + "/v1/images/generations", timeout=60,
                          headers={"Authorization": f"Bearer {created['key']}"},
                          json={"model": "tiny-sd", "prompt": "a hill", "n": 3, "steps": 2})
    assert response.status_code == 200

    def rows() -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = admin.get("/admin/v1/usage", params={
            "group_by": "key,model", "key_id": str(key_id)}).json()["data"]
        return data

    row = wait_for(rows)[0]
    assert row["model"] == "tiny-sd" and row["requests"] == 1
    assert row["images"] == 3 and row["steps"] == 6
    metrics = admin.get("/metrics").text
    counted = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
               if line.startswith("inferd_images_total{")}
    assert counted['inferd_images_total{model="tiny-sd",type="images"}'] >= 3
    assert counted['inferd_images_total{model="tiny-sd",type="steps"}'] >= 6


def test_image_backend_model_generate_answers_png_bytes(admin: httpx.Client) -> None:
    response = admin.post("/model/generate", json={"text": "a castle"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    image = picture(response.content)
    assert image.format == "PNG" and image.size == (64, 64)
    assert admin.post("/model/generate", json={}).status_code == 400


# -- jobs -------------------------------------------------------------------------------------
def wait_job(http: httpx.Client, job_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] in {"completed", "failed", "cancelled"} else None

    found: dict[str, Any] = wait_for(done, within=120)
    return found


def sse_events(http: httpx.Client, job_id: str, until: Callable[[str, dict[str, Any]], bool]
               ) -> list[tuple[str, dict[str, Any]]]:
    """The job's events as ``(kind, data)`` until ``until`` says stop (or the stream ends)."""
    seen: list[tuple[str, dict[str, Any]]] = []
    kind = ""
    with http.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                seen.append((kind, json.loads(line[6:])))
                if until(kind, seen[-1][1]):
                    break
    return seen


def test_prefer_respond_async_makes_a_job_with_step_progress(admin: httpx.Client) -> None:
    response = admin.post("/v1/images/generations", headers={"Prefer": "respond-async"},
                          json={"prompt": "a river", "steps": 4, "seed": 9})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["model"] == "tiny-sd" and job["endpoint"] == "/v1/images/generations"
    events = sse_events(admin, job["id"], lambda kind, _: kind in {"completed", "failed"})
    progress = [data for kind, data in events if kind == "progress"]
    assert progress == [{"step": s, "of": 4} for s in (1, 2, 3, 4)]
    done = wait_job(admin, job["id"])
    assert done["status"] == "completed", done
    assert picture(base64.b64decode(done["result"]["data"][0]["b64_json"])).size == (64, 64)
    assert done["usage"]["images"] == 1 and done["usage"]["steps"] == 4


def test_jobs_endpoint_accepts_images_and_cancel_stops_the_run(admin: httpx.Client) -> None:
    response = admin.post("/v1/jobs", json={"endpoint": "/v1/images/generations", "body": {
        "model": "tiny-sd", "prompt": "a long one", "steps": 500, "size": "256x256"}})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    sse_events(admin, job_id, lambda kind, data: kind == "progress" and data["step"] >= 2)
    cancelled = admin.post(f"/v1/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    # the pipeline's one thread is free again: the next picture is drawn
    after = admin.post("/v1/images/generations", json={"model": "tiny-sd", "prompt": "next"})
    assert after.status_code == 200
    # metered as a request the client gave up on
    assert wait_for(lambda: [r for r in admin.get(
        "/admin/v1/usage/records", params={"limit": 50}).json()["data"]
        if r["endpoint"] == "images" and r["status"] == 499])


def test_url_job_results_point_at_stored_pictures(admin: httpx.Client) -> None:
    response = admin.post("/v1/jobs", json={"endpoint": "/v1/images/generations", "body": {
        "model": "tiny-sd", "prompt": "a kite", "response_format": "url"}})
    done = wait_job(admin, response.json()["id"])
    url = done["result"]["data"][0]["url"]
    assert url.startswith("/v1/images/")
    content = admin.get(url)
    assert content.status_code == 200 and picture(content.content).format == "PNG"


def test_batch_api_runs_image_lines(sdk: openai.OpenAI) -> None:
    lines = [json.dumps({"custom_id": f"img-{i}", "method": "POST",
                         "url": "/v1/images/generations",
                         "body": {"model": "tiny-sd", "prompt": f"picture {i}", "seed": i}})
             for i in range(2)]
    upload = sdk.files.create(file=("in.jsonl", "\n".join(lines).encode()), purpose="batch")
    batch = sdk.batches.create(input_file_id=upload.id,
                               endpoint="/v1/images/generations",  # type: ignore[arg-type]
                               completion_window="24h")
    finished = wait_for(lambda: (b := sdk.batches.retrieve(batch.id)).status in {
        "completed", "failed"} and b, within=120)
    assert finished.status == "completed" and finished.output_file_id
    out = [json.loads(line) for line in
           sdk.files.content(finished.output_file_id).text.splitlines()]
    assert sorted(o["custom_id"] for o in out) == ["img-0", "img-1"]
    for line in out:
        body = line["response"]["body"]
        assert picture(base64.b64decode(body["data"][0]["b64_json"])).size == (64, 64)


# -- http replicas ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gateway(server: InferdProcess, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[InferdProcess]:
    """A second inferd whose image models are ``http`` replicas of ``server`` (and one dead
    replica that the router must route around)."""
    tmp = tmp_path_factory.mktemp("images-gw")
    images_only = {"capabilities": ["images"]}
    dead = {"kind": "http", "url": f"http://127.0.0.1:{free_port()}", "options": images_only}
    live = {"kind": "http", "url": server.url, "upstream_model": "tiny-sd",
            "api_key": ADMIN_KEY, "options": images_only}
    config = tmp / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "bundled_models": False, "health_check_interval": 0.5, "remote_models": [
            {"name": "remote-sd", "replicas": [dead, live]},
            {"name": "fallback-sd", "fallbacks": ["remote-sd"],
             "replicas": [dead]}]}))
    with InferdProcess(tmp, "--config", str(config), "--no-bundled",
                       env={"INFERD_AUTH": "off"}) as proc:
        yield proc


def test_http_replica_passes_images_through_with_the_model_renamed(
        gateway: InferdProcess) -> None:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0,
                       timeout=120) as sdk:
        listed = {m.id: m for m in sdk.models.list().data}
        assert (listed["remote-sd"].model_extra or {}).get("capabilities") == ["images"]
        # "remote-sd" is unknown upstream: only the rewritten name "tiny-sd" is served there
        for _ in range(3):  # whichever replica is picked first, the live one answers
            result = sdk.images.generate(model="remote-sd", prompt="a bridge", size="128x64",  # type: ignore[arg-type]
                                         extra_body={"seed": 4})
            assert result.data is not None and result.data[0].b64_json is not None
            assert picture(base64.b64decode(result.data[0].b64_json)).size == (128, 64)
        fallen = sdk.images.generate(model="fallback-sd", prompt="a bridge", size="128x64",  # type: ignore[arg-type]
                                     extra_body={"seed": 4})
        assert fallen.data is not None
        assert fallen.data[0].b64_json == result.data[0].b64_json  # same seed, same picture
        stored = sdk.images.generate(model="remote-sd", prompt="a bridge",
                                     response_format="url")
    assert stored.data is not None and stored.data[0].url is not None
    assert stored.data[0].url.startswith(gateway.url + "/v1/images/")  # kept by the gateway
    assert picture(httpx.get(stored.data[0].url).content).size == (64, 64)


# -- configuration ----------------------------------------------------------------------------
def test_cli_writes_a_pipeline_that_serve_model_flag_and_env_load(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    folder = tmp_path / "pipe"
    made = subprocess.run([sys.executable, "-m", "inferd", "images", "tiny-pipeline",
                           str(folder), "--seed", "3"], env=env, capture_output=True, text=True,
                          check=True)
    assert made.stdout.strip() == str(folder) and (folder / "model_index.json").exists()
    listed = subprocess.run([sys.executable, "-m", "inferd", "models"], capture_output=True,
                            text=True, check=True, env={**env, "INFERD_BUNDLED_MODELS": "false",
                            "INFERD_MODELS": json.dumps([{"name": "env-sd", "kind": "diffusers",
                                                          "path": str(folder), "steps": 7}])})
    assert json.loads(listed.stdout) == {"name": "env-sd", "kind": "diffusers",
                                         "path": str(folder), "aliases": [], "steps": 7,
                                         "guidance_scale": 7.5, "size": "512x512"}
    with InferdProcess(tmp_path / "serve", "--no-bundled", "--model",
                       f"flag-sd={folder},kind=diffusers,steps=2,size=96x64",
                       env={"INFERD_AUTH": "off"}) as proc:
        response = httpx.post(proc.url + "/v1/images/generations", timeout=60,
                              json={"prompt": "from the command line"})
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["steps"] == 2
    assert picture(base64.b64decode(response.json()["data"][0]["b64_json"])).size == (96, 64)


def test_a_client_that_leaves_stops_its_generation(server: InferdProcess,
                                                   admin: httpx.Client) -> None:
    created = create_key(admin)
    body = json.dumps({"model": "tiny-sd", "prompt": "never fetched", "steps": 500,
                       "size": "256x256"}).encode()
    head = (f"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {created['key']}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()

    def generating() -> bool:
        return any(line.startswith('inferd_requests_in_flight{model="tiny-sd"}')
                   and float(line.split()[-1]) >= 1
                   for line in admin.get("/metrics").text.splitlines())

    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head + body)
        wait_for(generating)
    # the generation ends at its next step: metered as given up (499), and the thread is free
    records = wait_for(lambda: admin.get("/admin/v1/usage/records", params={
        "key_id": str(created["id"])}).json()["data"])
    assert [(r["endpoint"], r["status"]) for r in records] == [("images", 499)]
    after = admin.post("/v1/images/generations", json={"model": "tiny-sd", "prompt": "next"})
    assert after.status_code == 200
