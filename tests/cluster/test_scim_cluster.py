"""SCIM deprovisioning on two gateways sharing PostgreSQL and Redis (announcements of key
changes; they poll once an hour, so what the other sees at once came through the
announcement): the identity provider deactivates a user on one gateway and the user's key is
refused on both; reactivated on the other, it works on both again; deleted, it stops."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.cluster.conftest import migrate
from tests.cluster.test_changes import until
from tests.helpers import InferdProcess, require_service

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.redis]

ADMIN = "sk-admin-for-the-scim-cluster-tests"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def _active(value: bool) -> dict[str, Any]:
    return {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active",
                                                "value": value}]}


def test_scim_deprovisioning_stops_a_key_on_every_gateway(
    start: Callable[..., InferdProcess], cluster_env: dict[str, str]
) -> None:
    require_service("redis")
    assert migrate(cluster_env).returncode == 0
    redis = {"INFERD_REDIS_URL": "redis://127.0.0.1:6379/0",
             "INFERD_REDIS_PREFIX": f"test-{uuid.uuid4().hex[:10]}",
             "INFERD_KEY_REFRESH_SECONDS": "3600"}
    first = start("gateway", INFERD_ADMIN_KEY=ADMIN, **redis)
    second = start("gateway", INFERD_ADMIN_KEY=ADMIN, **redis)

    def status(gateway: InferdProcess, key: str) -> int:
        return httpx.get(gateway.url + "/v1/models", timeout=30,
                         headers={"Authorization": f"Bearer {key}"}).status_code

    with httpx.Client(base_url=first.url, timeout=30,
                      headers={"Authorization": f"Bearer {ADMIN}"}) as admin:
        idp_key = _ok(admin.post("/admin/v1/keys", json={"name": "idp", "scope": "scim"}),
                      201)["key"]
        scim = [httpx.Client(base_url=g.url + "/scim/v2/", timeout=30,
                             headers={"Authorization": f"Bearer {idp_key}"})
                for g in (first, second)]
        user = _ok(scim[0].post("Users", json={"schemas": [USER], "userName": "dora",
                                               "externalId": "00u-dora"}), 201)
        key = _ok(admin.post("/admin/v1/keys", json={"user_id": int(user["id"])}), 201)["key"]
        assert [status(g, key) for g in (first, second)] == [200, 200]  # cached on both
        # the second gateway finds the user the first provisioned
        found = _ok(scim[1].get("Users", params={"filter": 'externalId eq "00u-dora"'}))
        assert [u["id"] for u in found["Resources"]] == [user["id"]]

        assert _ok(scim[0].patch(f"Users/{user['id']}", json=_active(False)))["active"] is False
        assert status(first, key) == 401
        until(lambda: status(second, key) == 401, "the deactivation never reached the second")
        assert _ok(scim[1].patch(f"Users/{user['id']}", json=_active(True)))["active"] is True
        assert status(second, key) == 200
        until(lambda: status(first, key) == 200, "the reactivation never reached the first")
        assert scim[1].delete(f"Users/{user['id']}").status_code == 204
        assert status(second, key) == 401
        until(lambda: status(first, key) == 401, "the deletion never reached the first")
        assert scim[0].get(f"Users/{user['id']}").status_code == 404
        for client in scim:
            client.close()
