"""Fair queueing by team and key weights through a real ``inferd serve``: the ``queue_weight``
of teams and keys set through the admin API, a model whose one replica runs one request at a
time in front of an upstream the test drives (``tests/fault_upstream.py``), and the order the
waiting requests reach it in: teams by their weights first, then the keys of a team."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.test_fair_queueing import ADMIN_KEY, MODEL, chat, held, release_all, waiting
from tests.fault_upstream import FaultUpstream
from tests.helpers import InferdProcess, wait_for

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultUpstream]:
    with FaultUpstream() as up:
        yield up


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory,
           upstream: FaultUpstream) -> Iterator[InferdProcess]:
    tmp = tmp_path_factory.mktemp("fairq-weights")
    config = tmp / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "bundled_models": False, "log_format": "text", "queue_max": 20, "queue_timeout": 120,
        "remote_models": [{"name": MODEL, "replicas": [
            {"kind": "http", "url": upstream.url("gate"), "upstream_model": "fake",
             "options": {"capacity": 1, "metrics": "none"}}]}]}))
    env = {"INFERD_ADMIN_KEY": ADMIN_KEY, "INFERD_KEY_REFRESH_SECONDS": "0.3"}
    with InferdProcess(tmp / "gw", "--config", str(config), "--no-bundled", env=env) as proc:
        yield proc


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def test_teams_take_turns_by_their_weights_and_their_keys_in_turn(
        server: InferdProcess, upstream: FaultUpstream) -> None:
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=30) as admin:
        alpha = ok(admin.post("/admin/v1/teams", json={"name": "alpha"}), 201)
        beta = ok(admin.post("/admin/v1/teams", json={"name": "beta"}), 201)
        assert alpha["queue_weight"] is None
        changed = ok(admin.patch(f"/admin/v1/teams/{beta['id']}", json={"queue_weight": 3}))
        assert changed["queue_weight"] == 3.0
        refused = admin.patch(f"/admin/v1/teams/{beta['id']}", json={"queue_weight": 0})
        assert refused.status_code == 400, refused.text
        made = {name: ok(admin.post("/admin/v1/keys", json={"name": name, "team_id": team}),
                         201)
                for name, team in (("a1", alpha["id"]), ("a2", alpha["id"]),
                                   ("b1", beta["id"]), ("solo", None))}
        solo = ok(admin.patch(f"/admin/v1/keys/{made['solo']['id']}",
                              json={"queue_weight": 1.5}))
        assert solo["queue_weight"] == 1.5
    keys = {name: view["key"] for name, view in made.items()}
    for key in keys.values():
        wait_for(lambda key=key: httpx.get(
            server.url + "/v1/models", headers={"Authorization": f"Bearer {key}"},
            timeout=30).status_code == 200, what="the new keys accepted")

    start = len(upstream.arrivals)
    with ThreadPoolExecutor(12) as pool:
        answers = [pool.submit(chat, server, keys["solo"], "solo busy")]
        held(upstream, 1)  # it runs; the rest waits, queued key after key
        for name in ("a1", "a2", "b1"):
            answers += [pool.submit(chat, server, keys[name], f"{name} {i}") for i in range(3)]
            waiting(server, len(answers) - 1)
        release_all(upstream, answers)
        assert [a.result().status_code for a in answers] == [200] * len(answers)
    order = [text.split()[0] for text in upstream.arrivals[start:]]
    # alpha (weight 1) and beta (weight 3) start level: alpha first (it waited first), then
    # beta's three turns for alpha's one; alpha's turns go to a1 and a2 in turn
    assert order == ["solo", "a1", "b1", "b1", "b1", "a2", "a1", "a2", "a1", "a2"]
