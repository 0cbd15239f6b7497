"""``GET /admin/v1/keys`` by cursor with search, and ``inferd keys list``, against a real
``inferd serve``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.helpers import ROOT, InferdProcess

ADMIN_KEY = "sk-test-admin-for-key-lists-0123"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferdProcess]:
    env = {
        "INFERD_ADMIN_KEY": ADMIN_KEY,
        "INFERD_MODELS": json.dumps([{"name": "echo", "kind": "echo"}]),
    }
    with InferdProcess(tmp_path_factory.mktemp("key-lists"), "--no-bundled", env=env) as proc:
        yield proc


@pytest.fixture(scope="module")
def made(server: InferdProcess) -> list[dict[str, Any]]:
    with httpx.Client(
        base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    ) as client:
        out = []
        for i in range(7):
            response = client.post(
                "/admin/v1/keys",
                json={
                    "name": f"svc-{i}",
                    "owner": "ann" if i % 2 else "bob",
                    "team": "search" if i < 3 else "ops",
                },
            )
            assert response.status_code == 201, response.text
            out.append(response.json())
        return out


def _get(server: InferdProcess, **params: Any) -> httpx.Response:
    return httpx.get(
        server.url + "/admin/v1/keys",
        params=params,
        timeout=30,
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )


def test_pages_by_cursor_until_has_more_is_false(
    server: InferdProcess, made: list[dict[str, Any]]
) -> None:
    names, after, pages = [], None, 0
    while True:
        params: dict[str, Any] = {"limit": 3, **({"after": after} if after else {})}
        page = _get(server, **params).json()
        assert page["object"] == "list" and len(page["data"]) <= 3
        names += [k["name"] for k in page["data"]]
        pages += 1
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert names == ["INFERD_ADMIN_KEY"] + [k["name"] for k in made]  # 8 keys: 3 + 3 + 2
    assert pages == 3
    assert all("key" not in k and "key_hash" not in k for k in _get(server).json()["data"])


def test_searches_by_owner_team_name_and_prefix(
    server: InferdProcess, made: list[dict[str, Any]]
) -> None:
    def names(**params: Any) -> list[str]:
        answer = _get(server, **params)
        assert answer.status_code == 200, answer.text
        return [k["name"] for k in answer.json()["data"]]

    assert names(owner="ann") == ["svc-1", "svc-3", "svc-5"]
    assert names(team="search") == ["svc-0", "svc-1", "svc-2"]
    assert names(team="search", owner="bob") == ["svc-0", "svc-2"]
    assert names(name="svc-6") == ["svc-6"]
    assert names(prefix=made[4]["prefix"]) == ["svc-4"]
    assert names(search="OPS") == ["svc-3", "svc-4", "svc-5", "svc-6"]
    assert names(search="nobody") == []
    first = _get(server, owner="ann", limit=1).json()
    assert first["has_more"] and [k["name"] for k in first["data"]] == ["svc-1"]
    rest = _get(server, owner="ann", after=first["last_id"]).json()
    assert [k["name"] for k in rest["data"]] == ["svc-3", "svc-5"] and not rest["has_more"]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 1001},
        {"after": -1},
        {"after": "x"},
        {"owner": "o" * 192},
        {"search": "a\x00b"},
        {"team": "\x00"},
    ],
)
def test_bad_list_parameters_are_a_400(server: InferdProcess, params: dict[str, Any]) -> None:
    answer = _get(server, **params)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["type"] == "invalid_request_error"


def test_the_cli_lists_by_pages_with_the_same_search(
    server: InferdProcess, made: list[dict[str, Any]]
) -> None:
    def cli(*args: str) -> list[dict[str, Any]]:
        done = subprocess.run(
            [sys.executable, "-m", "inferd", "keys", "list", *args],
            cwd=ROOT,
            text=True,
            capture_output=True,
            timeout=120,
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT / "src"),
                "INFERD_DATA_DIR": str(server.data_dir),
            },
        )
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines()]

    assert [k["name"] for k in cli("--team", "ops")] == ["svc-3", "svc-4", "svc-5", "svc-6"]
    assert [k["name"] for k in cli("--search", "svc", "--limit", "2")] == ["svc-0", "svc-1"]
    after = str(made[4]["id"])
    assert [k["name"] for k in cli("--after", after)] == ["svc-5", "svc-6"]
    assert len(cli()) == 8
