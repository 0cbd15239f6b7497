"""Teams and users end to end: ``inferd serve`` as a subprocess, the admin API, and requests
with the official ``openai`` SDK under the limits and models of a key's team and user."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.helpers import InferdProcess

ADMIN_KEY = "sk-test-admin-for-teams-0123456789"
MODELS = [{"name": "echo", "kind": "echo"}, {"name": "echo2", "kind": "echo"}]
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferdProcess]:
    env = {"INFERD_ADMIN_KEY": ADMIN_KEY, "INFERD_MODELS": json.dumps(MODELS)}
    with InferdProcess(tmp_path_factory.mktemp("teams"), "--no-bundled", env=env) as proc:
        yield proc


@pytest.fixture(scope="module")
def admin(server: InferdProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60,
                      headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
        yield client


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def sdk(server: InferdProcess, key: str) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=60)


def chat(client: OpenAI, model: str = "echo") -> str:
    answer = client.chat.completions.create(model=model, messages=HI, max_tokens=5)
    return answer.choices[0].message.content or ""


def test_a_key_uses_only_the_models_its_team_allows_too(
        server: InferdProcess, admin: httpx.Client) -> None:
    team = ok(admin.post("/admin/v1/teams", json={"name": "only-echo", "models": ["echo"]}), 201)
    key = ok(admin.post("/admin/v1/keys", json={
        "name": "both-models", "team_id": team["id"], "models": ["echo", "echo2"]}), 201)
    assert key["team"] == "only-echo" and key["team_id"] == team["id"]
    with sdk(server, key["key"]) as client:
        assert chat(client)
        with pytest.raises(openai.PermissionDeniedError) as refused:
            chat(client, "echo2")
        assert refused.value.code == "model_not_allowed"
        assert [m.id for m in client.models.list()] == ["echo"]
        # the team lifts its list: the key's own applies alone, at once
        ok(admin.patch(f"/admin/v1/teams/{team['id']}", json={"models": None}))
        assert chat(client, "echo2")
        assert sorted(m.id for m in client.models.list()) == ["echo", "echo2"]


def test_a_team_rate_limit_counts_across_its_keys(
        server: InferdProcess, admin: httpx.Client) -> None:
    team = ok(admin.post("/admin/v1/teams", json={"name": "slow-team", "rpm": 1}), 201)
    keys = [ok(admin.post("/admin/v1/keys", json={"name": f"slow-{i}", "team_id": team["id"],
                                                  "rpm": 100}), 201)["key"] for i in range(2)]
    listed = ok(admin.get("/admin/v1/keys", params={"team_id": team["id"]}))["data"]
    assert [k["name"] for k in listed] == ["slow-0", "slow-1"]
    with sdk(server, keys[0]) as first, sdk(server, keys[1]) as second:
        assert chat(first)
        with pytest.raises(openai.RateLimitError) as refused:
            chat(second)
        assert "for the team 'slow-team'" in refused.value.message
        assert refused.value.response.headers.get("retry-after")


def test_a_disabled_users_keys_stop_at_once(
        server: InferdProcess, admin: httpx.Client) -> None:
    user = ok(admin.post("/admin/v1/users", json={"name": "dana",
                                                  "email": "dana@example.org"}), 201)
    team = ok(admin.post("/admin/v1/teams", json={"name": "dana-team"}), 201)
    ok(admin.put(f"/admin/v1/teams/{team['id']}/members/{user['id']}",
                 json={"role": "owner"}))
    keys = [ok(admin.post("/admin/v1/keys", json={"name": "dana-own", "user_id": user["id"]}),
               201),
            ok(admin.post("/admin/v1/keys", json={"name": "dana-team", "user_id": user["id"],
                                                  "team_id": team["id"]}), 201)]
    assert keys[0]["owner"] == "dana"
    clients = [sdk(server, k["key"]) for k in keys]
    try:
        for client in clients:
            assert chat(client)
        disabled = ok(admin.patch(f"/admin/v1/users/{user['id']}", json={"disabled": True}))
        assert disabled["disabled"] is True
        for client in clients:
            with pytest.raises(openai.AuthenticationError) as refused:
                chat(client)
            assert refused.value.code == "user_disabled"
        shown = ok(admin.get(f"/admin/v1/keys/{keys[0]['id']}"))
        assert shown["enabled"] is True and shown["user_disabled"] is True
        ok(admin.patch(f"/admin/v1/users/{user['id']}", json={"disabled": False}))
        for client in clients:
            assert chat(client)
    finally:
        for client in clients:
            client.close()
    events = ok(admin.get("/admin/v1/audit", params={"action": "user."}))["data"]
    actions = [e["action"] for e in events if e["object_id"] == str(user["id"])]
    assert {"user.create", "user.disable", "user.enable"} <= set(actions)


def test_teams_users_and_members_page_and_refuse_what_would_orphan_keys(
        server: InferdProcess, admin: httpx.Client) -> None:
    made = [ok(admin.post("/admin/v1/users", json={"name": f"pager-{i}"}), 201)
            for i in range(5)]
    team = ok(admin.post("/admin/v1/teams", json={"name": "pagers", "tpm": 1000,
                                                  "metadata": {"cost_center": "42"}}), 201)
    assert team["metadata"] == {"cost_center": "42"}
    for user in made:
        ok(admin.put(f"/admin/v1/teams/{team['id']}/members/{user['id']}", json={}))
    seen, after = [], None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"after": after} if after else {})}
        page = ok(admin.get(f"/admin/v1/teams/{team['id']}/members", params=params))
        seen += [m["name"] for m in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == [f"pager-{i}" for i in range(5)]
    users = ok(admin.get("/admin/v1/users", params={"search": "pager-", "limit": 3}))
    assert len(users["data"]) == 3 and users["has_more"] is True
    key = ok(admin.post("/admin/v1/keys", json={"team_id": team["id"],
                                                "user_id": made[0]["id"]}), 201)
    refused = admin.delete(f"/admin/v1/teams/{team['id']}")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "team_has_keys"
    refused = admin.put(f"/admin/v1/teams/{team['id']}/members/{made[0]['id']}",
                        json={"role": "viewer"})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "member_has_keys"
    duplicate = admin.post("/admin/v1/teams", json={"name": "pagers"})
    assert duplicate.status_code == 409 and duplicate.json()["error"]["code"] == "team_exists"
    missing = admin.post("/admin/v1/keys", json={"team_id": 10**9})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "team_not_found"
    ok(admin.delete(f"/admin/v1/keys/{key['id']}"))
    ok(admin.delete(f"/admin/v1/teams/{team['id']}"))
    assert admin.get(f"/admin/v1/teams/{team['id']}").status_code == 404
