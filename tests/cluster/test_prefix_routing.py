"""Prefix-aware routing across gateways: two ``inferd engine`` processes register the same
model; two gateways send every turn of a conversation, and every request of a session, to the
same engine without sharing any state, and a model set to ``weighted`` spreads them."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster.conftest import ENGINE_KEY, migrate
from tests.helpers import InferdProcess, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

ADMIN = "sk-admin-for-the-prefix-routing-tests"


def replicas(gateway: httpx.Client) -> dict[str, dict[str, Any]]:
    """The available replicas of ``echo`` this gateway routes to, by id."""
    found = gateway.get("/admin/v1/replicas").json()["data"]
    return {str(r["id"]): r for r in found if r["model"] == "echo" and r.get("available")}


def every_replica(gateway: httpx.Client) -> list[dict[str, Any]]:
    """What a gateway knows of each replica of ``echo`` (for a failure's message)."""
    return [r for r in gateway.get("/admin/v1/replicas").json()["data"] if r["model"] == "echo"]


def answered(url: str) -> float:
    """Chat requests of ``echo`` an engine (at ``url``) has answered, from its metrics."""
    text = httpx.get(url.removesuffix("/v1") + "/metrics", timeout=30).text
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == "inferd_requests_total" and sample.labels.get("model") == "echo"
               and sample.labels.get("endpoint") == "chat")


def states(*what: Any) -> str:
    """``what`` with what each gateway (an ``httpx.Client``) knows of each replica, as JSON
    (a failure's message)."""
    return json.dumps([every_replica(w) if isinstance(w, httpx.Client) else
                       sorted(w) if isinstance(w, set) else w for w in what])


def served_by(gateway: httpx.Client, body: dict[str, Any], **headers: str) -> str:
    """The replica that answered ``body`` (requests are sent one at a time: the one whose
    request count at this gateway went up)."""
    before = {rid: r["requests"] for rid, r in replicas(gateway).items()}
    answer = gateway.post("/v1/chat/completions", json={"model": "echo", **body}, headers=headers)
    assert answer.status_code == 200, answer.text
    after = {rid: r["requests"] for rid, r in replicas(gateway).items()}
    moved = [rid for rid in after if after[rid] != before.get(rid, 0)]
    assert len(moved) == 1, (before, after)
    return moved[0]


def conversation(c: int, turns: int) -> list[dict[str, str]]:
    messages = [
        {"role": "system", "content": f"You are assistant number {c}."},
        {"role": "user", "content": f"Hello from conversation {c}."},
    ]
    for t in range(1, turns):
        messages += [
            {"role": "assistant", "content": f"Answer {t}."},
            {"role": "user", "content": f"Question {t} of conversation {c}."},
        ]
    return messages


def test_two_gateways_keep_each_conversation_and_session_on_one_engine(
    start: Callable[..., InferdProcess], cluster_env: dict[str, str]
) -> None:
    assert migrate(cluster_env).returncode == 0
    env = {"INFERD_ADMIN_KEY": ADMIN, "INFERD_ENGINE_API_KEY": ENGINE_KEY}
    gateways = [start("gateway", **env), start("gateway", **env)]
    for name in ("engine-a", "engine-b"):
        start("engine", "--no-bundled", **env, INFERD_ENGINE_INSTANCE=name)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with (
        httpx.Client(base_url=gateways[0].url, headers=admin, timeout=30) as one,
        httpx.Client(base_url=gateways[1].url, headers=admin, timeout=30) as two,
    ):
        for gateway in (one, two):
            wait_for(
                lambda g=gateway: len(replicas(g)) == 2,  # type: ignore[misc]
                what="both engines routed by the gateway",
            )
        view = one.get("/admin/v1/models/echo").json()
        assert (view["routing"], view["routing_default"]) == ("prefix", True)

        # every turn of a conversation, through either gateway, goes where its first went
        homes: dict[int, str] = {}
        for c in range(12):
            homes[c] = served_by(one, {"messages": conversation(c, 1)})
            for turns, gateway in ((2, two), (3, one), (4, two)):
                served = served_by(gateway, {"messages": conversation(c, turns)})
                assert served == homes[c], states(c, turns, one, two)
        assert len(set(homes.values())) == 2  # and the conversations use both engines
        # each engine answers what it is sent with its own engine: nothing is sent on to the
        # other (or to itself), so the engines answered the 48 requests once each
        assert sum(answered(r["url"]) for r in every_replica(one)) == 12 * 4

        # an explicit session outranks the prompt: one engine for all its requests
        for session in ("alpha", "beta", "gamma", "delta"):
            places = {
                served_by(gateway, {"messages": conversation(c, 1)}, **{"x-session-id": session})
                for c, gateway in zip(range(6), (one, two) * 3, strict=True)
            }
            places |= {
                served_by(two, {"messages": conversation(c, 2), "session_id": session})
                for c in range(3)
            }
            assert len(places) == 1, states(session, places, one, two)

        # weighted: the same conversation goes to each engine in turn
        answer = one.patch("/admin/v1/models/echo", json={"routing": "weighted"})
        assert answer.status_code == 200 and answer.json()["routing"] == "weighted", answer.text
        wait_for(
            lambda: two.get("/admin/v1/models/echo").json()["routing"] == "weighted",
            what="the other gateway synced the routing",
        )
        places = {served_by(two, {"messages": conversation(0, 2)}) for _ in range(4)}
        assert len(places) == 2
        answer = one.patch("/admin/v1/models/echo", json={"routing": "sideways"})
        assert answer.status_code == 400 and answer.json()["error"]["param"], answer.text
