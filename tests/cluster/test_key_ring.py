"""Key changes on three gateways sharing PostgreSQL: two announce and hear them on Redis (and
poll once an hour, so what they see at once came through the announcement), one without Redis
reads the change feed every 0.3 s."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
import pytest

from tests.cluster.conftest import migrate
from tests.cluster.test_changes import until
from tests.helpers import InferdProcess, require_service

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.redis]

ADMIN = "sk-admin-for-the-key-ring-tests"


def test_key_changes_reach_every_gateway(
    start: Callable[..., InferdProcess], cluster_env: dict[str, str]
) -> None:
    require_service("redis")
    assert migrate(cluster_env).returncode == 0
    redis = {
        "INFERD_REDIS_URL": "redis://127.0.0.1:6379/0",
        "INFERD_REDIS_PREFIX": f"test-{uuid.uuid4().hex[:10]}",
        "INFERD_KEY_REFRESH_SECONDS": "3600",
    }
    first = start("gateway", INFERD_ADMIN_KEY=ADMIN, **redis)
    second = start("gateway", INFERD_ADMIN_KEY=ADMIN, **redis)
    polling = start("gateway", INFERD_ADMIN_KEY=ADMIN, INFERD_KEY_REFRESH_SECONDS="0.3")
    admin = {"Authorization": f"Bearer {ADMIN}"}

    def status(gateway: InferdProcess, key: str) -> int:
        return httpx.get(
            gateway.url + "/v1/models", timeout=30, headers={"Authorization": f"Bearer {key}"}
        ).status_code

    with httpx.Client(base_url=first.url, headers=admin, timeout=30) as one:
        # a key used everywhere (so cached everywhere), then disabled through the first
        made = one.post("/admin/v1/keys", json={"name": "revoked"}).json()
        assert [status(g, made["key"]) for g in (first, second, polling)] == [200] * 3
        assert one.post(f"/admin/v1/keys/{made['id']}/disable").status_code == 200
        assert status(first, made["key"]) == 401
        until(
            lambda: status(second, made["key"]) == 401,
            "the announced revocation never reached the second gateway",
        )
        until(
            lambda: status(polling, made["key"]) == 401,
            "the polling gateway never read the revocation from the feed",
        )
        # enabled again, then deleted
        assert one.post(f"/admin/v1/keys/{made['id']}/enable").status_code == 200
        until(lambda: status(second, made["key"]) == 200, "the key enabled again")
        until(lambda: status(polling, made["key"]) == 200, "the key enabled again (poll)")
        assert one.delete(f"/admin/v1/keys/{made['id']}").status_code == 200
        until(lambda: status(second, made["key"]) == 401, "the deleted key on the second")
        until(lambda: status(polling, made["key"]) == 401, "the deleted key (poll)")

        # a key made on the first works on the others at its first use (read by hash)
        new = one.post("/admin/v1/keys", json={"name": "new"}).json()
        assert status(second, new["key"]) == 200 and status(polling, new["key"]) == 200
