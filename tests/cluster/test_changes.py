"""Key and catalogue changes reach every gateway at once through Redis pub/sub.

The gateways here poll keys and the catalogue only once an hour, so a change seen within
seconds on the other gateway can only have come through the notification.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import httpx
import pytest

from tests.cluster.conftest import ENGINE_KEY, migrate
from tests.helpers import InferdProcess, require_service

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.redis]

ADMIN = "sk-admin-for-the-change-tests"
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}


def until(check: Callable[[], bool], what: str, seconds: float = 20) -> None:
    end = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < end, what
        time.sleep(0.1)


def test_revocation_and_new_replicas_reach_the_other_gateway_at_once(
        start: Callable[..., InferdProcess], cluster_env: dict[str, str]) -> None:
    require_service("redis")
    assert migrate(cluster_env).returncode == 0
    env = {"INFERD_ADMIN_KEY": ADMIN, "INFERD_REDIS_URL": "redis://127.0.0.1:6379/0",
           "INFERD_REDIS_PREFIX": f"test-{uuid.uuid4().hex[:10]}",
           "INFERD_KEY_REFRESH_SECONDS": "3600", "INFERD_HEALTH_CHECK_INTERVAL": "3600"}
    first, second = start("gateway", **env), start("gateway", **env)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=first.url, headers=admin, timeout=30) as one, \
            httpx.Client(base_url=second.url, timeout=30) as two:
        assert two.post("/v1/chat/completions", json=CHAT, headers=admin).status_code == 404
        # registers itself after both gateways started
        start("engine", "--no-bundled", **env, INFERD_ENGINE_API_KEY=ENGINE_KEY)
        until(lambda: two.post("/v1/chat/completions", json=CHAT,
                               headers=admin).status_code == 200,
              "the second gateway never routed to the new engine")
        created = one.post("/admin/v1/keys", json={"name": "revoked soon"}).json()
        user = {"Authorization": f"Bearer {created['key']}"}
        assert two.post("/v1/chat/completions", json=CHAT, headers=user).status_code == 200
        assert one.post(f"/admin/v1/keys/{created['id']}/disable").status_code == 200
        until(lambda: two.post("/v1/chat/completions", json=CHAT,
                               headers=user).status_code == 401,
              "the second gateway still accepts the revoked key")
