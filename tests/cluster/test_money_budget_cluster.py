"""A team's money budget on two ``inferd serve`` processes sharing PostgreSQL and Redis: 200
concurrent requests, each of a deterministic cost (its worst case is its real cost), against a
budget that pays for exactly 50 of them. The spend never passes the budget and exactly 50 are
served: none is refused while room remains. Every other one is a 429 ``insufficient_quota``
in the OpenAI error shape."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.cluster.conftest import migrate
from tests.cluster.test_changes import until
from tests.helpers import InferdProcess, require_service

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.redis]

ADMIN = "sk-admin-for-the-money-budget-tests"
# Input free, output 0.5 a token: 4 completion tokens (max_tokens 4 of 8 words) cost 2.0,
# exactly what the gateway reserves as the worst case.
MODELS = json.dumps([{"name": "echo", "kind": "echo",
                      "price": {"input": 0, "output": 500_000}}])
CHAT = {"model": "echo", "max_tokens": 4,
        "messages": [{"role": "user", "content": "one two three four five six seven eight"}]}
COST, SERVED, SENT = 2.0, 50, 200


def _made(response: httpx.Response) -> Any:
    assert response.status_code == 201, response.text
    return response.json()


async def _burst(urls: list[str], keys: list[str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=120,
                                 limits=httpx.Limits(max_connections=SENT)) as client:
        return await asyncio.gather(*(
            client.post(urls[i % 2] + "/v1/chat/completions", json=CHAT,
                        headers={"Authorization": f"Bearer {keys[i % 2]}"})
            for i in range(SENT)))


def test_two_gateways_serve_exactly_what_a_team_budget_pays_for(
    start: Callable[..., InferdProcess], cluster_env: dict[str, str]
) -> None:
    require_service("redis")
    env = {**cluster_env, "INFERD_MODELS": MODELS}
    assert migrate(env).returncode == 0
    shared = {"INFERD_REDIS_URL": "redis://127.0.0.1:6379/0",
              "INFERD_REDIS_PREFIX": f"test-{uuid.uuid4().hex[:10]}",
              "INFERD_KEY_REFRESH_SECONDS": "0.3", "INFERD_USAGE_FLUSH_SECONDS": "0.2",
              "INFERD_MODELS": MODELS}
    gateways = [start("serve", "--no-bundled", INFERD_ADMIN_KEY=ADMIN, **shared)
                for _ in range(2)]
    with httpx.Client(base_url=gateways[0].url, timeout=30,
                      headers={"Authorization": f"Bearer {ADMIN}"}) as admin:
        team = _made(admin.post("/admin/v1/teams", json={
            "name": "paying", "max_budget": COST * SERVED, "budget_period": "month"}))
        assert team["max_budget"] == COST * SERVED and team["budget_alert"] is None
        keys = [_made(admin.post("/admin/v1/keys", json={"team_id": team["id"]}))["key"]
                for _ in range(2)]
        for gateway, key in zip(gateways, keys, strict=True):
            until(lambda g=gateway, k=key: httpx.get(
                g.url + "/v1/models", headers={"Authorization": f"Bearer {k}"},
                timeout=30).status_code == 200, "a key never reached a gateway")

        answers = asyncio.run(_burst([g.url for g in gateways], keys))
        served = [a for a in answers if a.status_code == 200]
        refused = [a for a in answers if a.status_code != 200]
        assert len(served) == SERVED
        assert {a.status_code for a in refused} == {429}
        error = refused[0].json()["error"]
        assert error["code"] == "insufficient_quota" and error["type"]
        assert "the team 'paying'" in error["message"]
        assert all(a.json()["usage"]["completion_tokens"] == 4 for a in served)

        def team_usage() -> dict[str, Any]:
            rows = admin.get("/admin/v1/usage", params={"group_by": "team"}).json()["data"]
            return next((r for r in rows if r["team_id"] == team["id"]), {"requests": 0})

        # both gateways' records written (the refusals are recorded too)
        until(lambda: team_usage()["requests"] == SENT, "the usage records never arrived")
        assert team_usage()["cost"] == COST * SERVED  # binary fractions: the sum is exact
