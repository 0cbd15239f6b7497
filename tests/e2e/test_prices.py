"""Prices and cost through a real ``inferd serve``: a price set through the admin API (and one
from the config file) is shown in the model's view, and every request's cost, prompt and
completion tokens times the prices, is read back exactly from ``/admin/v1/usage``. The
official openai SDK is the client, the echo engine the model."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.helpers import InferdProcess, wait_for

ADMIN_KEY = "sk-test-admin-prices-0123456789abcdef"
# Per token 0.5 and 0.25, per million 500,000 and 250,000: every cost and every sum of them
# is a binary fraction, exact in the database's double column and in JSON.
API_PRICE = {"input": 500_000, "output": 250_000}
CONFIG_PRICE = {"input": "0.15", "output": "0.6"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferdProcess]:
    tmp = tmp_path_factory.mktemp("prices")
    config = tmp / "inferd.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {"name": "echo", "kind": "echo"},
                    {"name": "echo-priced", "kind": "echo", "price": CONFIG_PRICE},
                ]
            }
        )
    )
    env = {
        "INFERD_ADMIN_KEY": ADMIN_KEY,
        "INFERD_KEY_REFRESH_SECONDS": "0.3",
        "INFERD_USAGE_FLUSH_SECONDS": "0.2",
    }
    with InferdProcess(tmp, "--config", str(config), "--no-bundled", env=env) as proc:
        yield proc


@pytest.fixture(scope="module")
def admin(server: InferdProcess) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    ) as c:
        yield c


def client_of(server: InferdProcess, admin: httpx.Client) -> tuple[str, openai.OpenAI]:
    created = admin.post("/admin/v1/keys", json={"name": "prices"})
    assert created.status_code == 201, created.text
    key: dict[str, Any] = created.json()
    wait_for(
        lambda: (
            httpx.get(
                server.url + "/v1/models", headers={"Authorization": f"Bearer {key['key']}"}
            ).status_code
            == 200
        )
    )
    return key["id"], openai.OpenAI(base_url=server.url + "/v1", api_key=key["key"], max_retries=0)


def usage_of(admin: httpx.Client, key_id: str, requests: int) -> list[dict[str, Any]]:
    """The key's usage per model, once its ``requests`` requests are all recorded."""

    def rows() -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = admin.get(
            "/admin/v1/usage", params={"group_by": "key,model", "key_id": key_id}
        ).json()["data"]
        return data if sum(r["requests"] for r in data) == requests else []

    return wait_for(rows)


def test_a_price_set_through_the_api_costs_every_request_exactly(
    server: InferdProcess, admin: httpx.Client
) -> None:
    changed = admin.patch("/admin/v1/models/echo", json={"price": API_PRICE})
    assert changed.status_code == 200, changed.text
    assert changed.json()["price"] == {
        "input": 500000.0,
        "output": 250000.0,
        "cached_input": None,
        "image": 0.0,
        "step": 0.0,
    }
    assert admin.get("/admin/v1/models/echo").json()["price"] == changed.json()["price"]
    key_id, client = client_of(server, admin)
    answers = [
        client.chat.completions.create(model="echo", messages=[{"role": "user", "content": text}])
        for text in ("hello there", "a somewhat longer question about prices", "x")
    ]
    expected = sum(
        Decimal(a.usage.prompt_tokens) * Decimal("0.5")  # type: ignore[union-attr]
        + Decimal(a.usage.completion_tokens) * Decimal("0.25")  # type: ignore[union-attr]
        for a in answers
    )
    assert expected > 0
    rows = usage_of(admin, key_id, 3)
    assert [(r["model"], r["cost"]) for r in rows] == [("echo", float(expected))]
    records = admin.get("/admin/v1/usage/records", params={"key_id": key_id}).json()["data"]
    assert sorted(r["cost"] for r in records) == sorted(
        float(
            a.usage.prompt_tokens * Decimal("0.5")  # type: ignore[union-attr]
            + a.usage.completion_tokens * Decimal("0.25")
        )  # type: ignore[union-attr]
        for a in answers
    )


def test_a_price_from_the_config_file_and_an_unpriced_model(
    server: InferdProcess, admin: httpx.Client
) -> None:
    assert admin.get("/admin/v1/models/echo-priced").json()["price"] == {
        "input": 0.15,
        "output": 0.6,
        "cached_input": None,
        "image": 0.0,
        "step": 0.0,
    }
    key_id, client = client_of(server, admin)
    answer = client.chat.completions.create(
        model="echo-priced", messages=[{"role": "user", "content": "how much is this"}]
    )
    assert answer.usage is not None
    expected = float(
        (
            answer.usage.prompt_tokens * Decimal("0.15")
            + answer.usage.completion_tokens * Decimal("0.6")
        )
        / 1_000_000
    )
    # the price removed: the next request costs nothing, the first keeps its cost
    assert admin.patch("/admin/v1/models/echo-priced", json={"price": None}).json()["price"] is None
    client.chat.completions.create(
        model="echo-priced", messages=[{"role": "user", "content": "and now"}]
    )
    rows = usage_of(admin, key_id, 2)
    assert [(r["model"], r["requests"], r["cost"]) for r in rows] == [("echo-priced", 2, expected)]


@pytest.mark.parametrize(
    "price",
    [
        {"input": -1},
        {"input": 1e7},
        {"output": "lots"},
        {"step": -0.01},
        {"input": 0.1234567891},
        {"per_token": 1},
        "free",
    ],
)
def test_bad_prices_get_a_400_in_the_openai_shape(admin: httpx.Client, price: Any) -> None:
    for response in (
        admin.patch("/admin/v1/models/echo", json={"price": price}),
        admin.post("/admin/v1/models", json={"name": "bad-price", "price": price}),
    ):
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert "price" in (error["param"] or "") + error["message"]
    assert admin.get("/admin/v1/models/bad-price").status_code == 404


def test_a_replicas_own_price_replaces_its_models(
    server: InferdProcess, admin: httpx.Client
) -> None:
    """An ``http`` replica (this server's own echo, through the loopback) with
    ``options.price``: its requests cost its price, not the model's."""
    created = admin.post(
        "/admin/v1/models",
        json={
            "name": "relay",
            "price": {"input": 1, "output": 1},
            "replicas": [
                {
                    "url": server.url + "/v1",
                    "upstream_model": "echo-priced",
                    "api_key": ADMIN_KEY,
                    "options": {"price": {"input": 250_000, "output": 125_000}},
                }
            ],
        },
    )
    assert created.status_code == 201, created.text
    replica = created.json()["replicas"][0]
    assert replica["options"]["price"] == {
        "input": 250000.0,
        "output": 125000.0,
        "cached_input": None,
        "image": 0.0,
        "step": 0.0,
    }
    wait_for(lambda: admin.get("/admin/v1/models/relay").json()["healthy"])
    key_id, client = client_of(server, admin)
    answer = client.chat.completions.create(
        model="relay", messages=[{"role": "user", "content": "through the relay"}]
    )
    assert answer.usage is not None
    rows = usage_of(admin, key_id, 1)
    records = admin.get("/admin/v1/usage/records", params={"key_id": key_id}).json()["data"]
    assert [r["replica"] for r in records] == [replica["id"]]
    expected = float(
        answer.usage.prompt_tokens * Decimal("0.25")
        + answer.usage.completion_tokens * Decimal("0.125")
    )
    assert [(r["model"], r["cost"]) for r in rows] == [("relay", expected)]
