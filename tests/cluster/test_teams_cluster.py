"""Teams and users on three gateways sharing PostgreSQL: two share Redis (limits, and
announcements of changes; they poll once an hour, so what they see at once came through the
announcement), one without Redis reads the key feed every 0.3 s."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.cluster.conftest import ENGINE_KEY, migrate
from tests.cluster.test_changes import until
from tests.helpers import InferdProcess, require_service

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.redis]

ADMIN = "sk-admin-for-the-teams-cluster-tests"
CHAT = {"model": "echo", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


def _made(response: httpx.Response) -> Any:
    assert response.status_code == 201, response.text
    return response.json()


def test_a_disabled_user_stops_everywhere_and_a_team_rate_spans_gateways(
    start: Callable[..., InferdProcess], cluster_env: dict[str, str]
) -> None:
    require_service("redis")
    assert migrate(cluster_env).returncode == 0
    redis = {"INFERD_REDIS_URL": "redis://127.0.0.1:6379/0",
             "INFERD_REDIS_PREFIX": f"test-{uuid.uuid4().hex[:10]}",
             "INFERD_KEY_REFRESH_SECONDS": "3600"}
    start("engine", "--no-bundled", INFERD_ADMIN_KEY=ADMIN, INFERD_ENGINE_API_KEY=ENGINE_KEY)
    first = start("gateway", INFERD_ADMIN_KEY=ADMIN, **redis)
    second = start("gateway", INFERD_ADMIN_KEY=ADMIN, **redis)
    polling = start("gateway", INFERD_ADMIN_KEY=ADMIN, INFERD_KEY_REFRESH_SECONDS="0.3")
    gateways = (first, second, polling)

    def status(gateway: InferdProcess, key: str) -> int:
        return httpx.get(gateway.url + "/v1/models", timeout=30,
                         headers={"Authorization": f"Bearer {key}"}).status_code

    def chat(gateway: InferdProcess, key: str) -> httpx.Response:
        return httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, timeout=30,
                          headers={"Authorization": f"Bearer {key}"})

    with httpx.Client(base_url=first.url, timeout=30,
                      headers={"Authorization": f"Bearer {ADMIN}"}) as admin:
        user = _made(admin.post("/admin/v1/users", json={"name": "carol"}))
        key = _made(admin.post("/admin/v1/keys", json={"user_id": user["id"]}))["key"]
        assert [status(g, key) for g in gateways] == [200] * 3  # cached everywhere
        patched = admin.patch(f"/admin/v1/users/{user['id']}", json={"disabled": True})
        assert patched.status_code == 200, patched.text
        assert status(first, key) == 401
        until(lambda: status(second, key) == 401, "the announced change never reached the second")
        until(lambda: status(polling, key) == 401, "the polling gateway never read the change")
        admin.patch(f"/admin/v1/users/{user['id']}", json={"disabled": False})
        until(lambda: status(second, key) == 200, "the user enabled again")
        until(lambda: status(polling, key) == 200, "the user enabled again (poll)")

        # one request a minute for the team, counted in Redis across both gateways (once
        # both route to the engine)
        for gateway in (first, second):
            until(lambda g=gateway: chat(g, ADMIN).status_code == 200,
                  "the engine's model never reached a gateway")
        team = _made(admin.post("/admin/v1/teams", json={"name": "shared", "rpm": 1}))
        keys = [_made(admin.post("/admin/v1/keys", json={"team_id": team["id"]}))["key"]
                for _ in range(2)]
        assert chat(first, keys[0]).status_code == 200
        refused = chat(second, keys[1])
        assert refused.status_code == 429, refused.text
        assert "the team 'shared'" in refused.json()["error"]["message"]
