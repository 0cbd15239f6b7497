"""What an image request may cost: the model's ``max_steps`` and ``max_size`` (400 naming the
field and the bound), a key's image units (steps x megapixels x pictures) per minute and image
budget, shown in its usage, and the model's price per image and per step under a money budget.
``inferd serve`` on the tiny random-weight pipeline, the official openai SDK as client; stored
pictures count in the key's storage quota."""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.helpers import InferdProcess, wait_for

ADMIN_KEY = "sk-test-admin-imagecost-0123456789abcdef"
# 256x256, 20 steps, 4 pictures: ceil(20 x 0.065536 x 4) = 6 units (refused in these tests
# before it runs: the tiny pipeline is slow on a busy machine)
BIG: dict[str, Any] = {"size": "256x256", "n": 4, "extra_body": {"steps": 20}}
BIG_UNITS = math.ceil(20 * 256 * 256 * 4 / 1_000_000)
SMALL: dict[str, Any] = {"size": "64x64", "extra_body": {"steps": 1}}  # 1 unit


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory,
           tiny_pipeline: Path) -> Iterator[InferdProcess]:
    tmp = tmp_path_factory.mktemp("image-cost")
    config = tmp / "inferd.yaml"
    config.write_text(yaml.safe_dump({"models": [
        {"name": "tiny-sd", "kind": "diffusers", "path": str(tiny_pipeline), "steps": 2,
         "size": "64x64", "max_steps": 20, "max_size": "256x256"}]}))
    env = {"INFERD_ADMIN_KEY": ADMIN_KEY, "INFERD_KEY_REFRESH_SECONDS": "0.3",
           "INFERD_USAGE_FLUSH_SECONDS": "0.2"}
    with InferdProcess(tmp, "--config", str(config), "--no-bundled", env=env) as proc:
        yield proc


@pytest.fixture(scope="module")
def admin(server: InferdProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120,
                      headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as c:
        yield c


def client_of(server: InferdProcess, admin: httpx.Client,
              **limits: Any) -> tuple[dict[str, Any], openai.OpenAI]:
    created = admin.post("/admin/v1/keys", json={"name": "cost", **limits})
    assert created.status_code == 201, created.text
    key: dict[str, Any] = created.json()
    wait_for(lambda: httpx.get(server.url + "/v1/models", headers={
        "Authorization": f"Bearer {key['key']}"}).status_code == 200)
    return key, openai.OpenAI(base_url=server.url + "/v1", api_key=key["key"],
                              max_retries=0, timeout=120)


def draw(client: openai.OpenAI, shape: dict[str, Any], **more: Any) -> Any:
    return client.images.generate(model="tiny-sd", prompt="a red cube", **shape, **more)


@pytest.mark.parametrize(("fields", "param", "bound"), [
    ({"extra_body": {"steps": 21}}, "steps", "at most 20"),
    ({"size": "512x512"}, "size", "at most 256x256"),
    ({"size": "64x512"}, "size", "no side over 256"),
])
def test_requests_past_the_models_bounds_are_refused_naming_them(
        server: InferdProcess, admin: httpx.Client, fields: dict[str, Any], param: str,
        bound: str) -> None:
    _, client = client_of(server, admin)
    with pytest.raises(openai.BadRequestError) as refused:
        draw(client, fields)
    assert refused.value.param == param
    assert bound in refused.value.message


def test_image_units_per_minute_count_steps_megapixels_and_pictures(
        server: InferdProcess, admin: httpx.Client) -> None:
    key, client = client_of(server, admin, upm=BIG_UNITS - 1, ipm=100)
    assert len(draw(client, SMALL).data) == 1  # 1 unit of 5
    with pytest.raises(openai.RateLimitError) as limited:  # 6 units: more than the 4 left
        draw(client, BIG)
    assert f"{BIG_UNITS - 1} image units" in limited.value.message
    assert limited.value.response.headers.get("retry-after")

    def usage() -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = admin.get("/admin/v1/usage", params={
            "group_by": "key", "key_id": key["id"]}).json()["data"]
        return rows if rows and rows[0]["requests"] == 2 else []

    totals = wait_for(usage)[0]
    assert totals["image_units"] == 1 and totals["images"] == 1  # the refused one cost none
    records = admin.get("/admin/v1/usage/records", params={"key_id": key["id"]}).json()["data"]
    assert sorted((r["status"], r["image_units"]) for r in records) == [(200, 1), (429, None)]


def test_the_image_budget_counts_cost_not_pictures(server: InferdProcess,
                                                   admin: httpx.Client) -> None:
    _, client = client_of(server, admin, image_budget=BIG_UNITS - 1, budget_period="day")
    with pytest.raises(openai.RateLimitError) as spent:  # one request, 6 units: over 5
        draw(client, BIG)
    assert spent.value.code == "insufficient_quota"
    assert draw(client, SMALL).data  # 1 unit fits


def test_pictures_kept_by_url_count_in_the_storage_quota(server: InferdProcess,
                                                         admin: httpx.Client) -> None:
    key, client = client_of(server, admin, storage_objects=2)
    kept = draw(client, SMALL, n=2, response_format="url")
    assert len(kept.data) == 2 and all(item.url for item in kept.data)
    with pytest.raises(openai.RateLimitError) as full:
        draw(client, SMALL, response_format="url")
    assert full.value.code == "storage_quota_exceeded"
    assert draw(client, SMALL).data[0].b64_json  # not kept: no room needed
    storage = admin.get(f"/admin/v1/keys/{key['id']}").json()["storage"]
    assert storage["objects"] == 2 and storage["bytes"] > 0


def test_a_money_budget_for_two_pictures_refuses_a_third_concurrent_request(
        server: InferdProcess, admin: httpx.Client) -> None:
    """Each request reserves its pictures at the model's price per image before it runs: of
    three concurrent requests for one picture under a budget that pays for two, one is
    refused, whichever finishes first."""
    priced = admin.patch("/admin/v1/models/tiny-sd", json={"price": {"image": 0.5}})
    assert priced.status_code == 200, priced.text
    try:
        key, client = client_of(server, admin, max_budget=1.0)
        with ThreadPoolExecutor(3) as pool:
            outcomes = list(pool.map(lambda _: _outcome(client), range(3)))
        assert sorted(outcomes) == ["200", "200", "insufficient_quota"]

        def spent() -> list[dict[str, Any]]:
            rows: list[dict[str, Any]] = admin.get("/admin/v1/usage", params={
                "group_by": "key", "key_id": key["id"]}).json()["data"]
            return rows if rows and rows[0]["requests"] == 3 else []

        assert wait_for(spent)[0]["cost"] == 1.0  # two pictures at 0.5; the refused one none
    finally:
        reset = admin.patch("/admin/v1/models/tiny-sd", json={"price": None})
        assert reset.status_code == 200, reset.text


def _outcome(client: openai.OpenAI) -> str:
    """200, or the code of the 429 that refused it."""
    try:
        draw(client, SMALL)
    except openai.RateLimitError as refused:
        return str(refused.code)
    return "200"


def test_a_price_per_step_charges_each_picture_for_the_steps_it_ran(
        server: InferdProcess, admin: httpx.Client) -> None:
    """cost = pictures x (image + steps x step): with the steps the request asks for, else
    the model's default (2), in the usage records and the request log alike."""
    priced = admin.patch("/admin/v1/models/tiny-sd", json={"price": {"image": 0.5, "step": 0.25}})
    assert priced.status_code == 200, priced.text
    assert priced.json()["price"]["step"] == 0.25
    try:
        key, client = client_of(server, admin)
        draw(client, SMALL)  # 1 picture of 1 step: 0.5 + 1 x 0.25
        draw(client, {"size": "64x64", "n": 2})  # 2 pictures of the default 2: 2 x (0.5 + 0.5)

        def records() -> list[dict[str, Any]]:
            rows: list[dict[str, Any]] = admin.get("/admin/v1/usage/records", params={
                "key_id": key["id"]}).json()["data"]
            return rows if len(rows) == 2 else []

        charged = sorted((r["images"], r["steps"], r["cost"]) for r in wait_for(records))
        assert charged == [(1, 1, 0.75), (2, 4, 2.0)]
        logged = admin.get("/admin/v1/requests", params={"key_id": key["id"]}).json()["data"]
        assert sorted(r["cost"] for r in logged) == [0.75, 2.0]
    finally:
        reset = admin.patch("/admin/v1/models/tiny-sd", json={"price": None})
        assert reset.status_code == 200, reset.text


def test_a_money_budget_refuses_a_request_whose_steps_make_its_worst_case_too_dear(
        server: InferdProcess, admin: httpx.Client) -> None:
    """Each picture reserves the image price plus the steps it may run at the step price: 10
    steps (0.5 + 10 x 0.25 = 3) do not fit a budget of 2, 1 step (0.75) and the model's
    default of 2 (1.0) do, and the key is charged those."""
    priced = admin.patch("/admin/v1/models/tiny-sd", json={"price": {"image": 0.5, "step": 0.25}})
    assert priced.status_code == 200, priced.text
    try:
        key, client = client_of(server, admin, max_budget=2.0)
        with pytest.raises(openai.RateLimitError) as refused:
            draw(client, {"size": "64x64", "extra_body": {"steps": 10}})
        assert refused.value.code == "insufficient_quota"
        assert len(draw(client, SMALL).data) == 1
        assert len(draw(client, {"size": "64x64"}).data) == 1

        def spent() -> list[dict[str, Any]]:
            rows: list[dict[str, Any]] = admin.get("/admin/v1/usage", params={
                "group_by": "key", "key_id": key["id"]}).json()["data"]
            return rows if rows and rows[0]["requests"] == 3 else []

        assert wait_for(spent)[0]["cost"] == 1.75  # 0.75 + 1.0; the refused one nothing
        # 0.25 left: even 1 step (0.75) no longer fits
        with pytest.raises(openai.RateLimitError) as broke:
            draw(client, SMALL)
        assert broke.value.code == "insufficient_quota"
    finally:
        reset = admin.patch("/admin/v1/models/tiny-sd", json={"price": None})
        assert reset.status_code == 200, reset.text
