"""``/v1/rerank`` and ``/v1/score``: answered from the bundled embedding model (cosine
similarity), and passed through to an ``http`` replica that serves them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers import InferdProcess

EMBED = "all-minilm-l6-v2"
DOCS = ["The capital of France is Paris.", "Bananas are rich in potassium.",
        "Paris is a city in France with the Eiffel Tower."]


def test_rerank_from_the_embedding_model(http: httpx.Client) -> None:
    response = http.post("/v1/rerank", json={"model": EMBED, "query": "Where is Paris?",
                                             "documents": DOCS, "top_n": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["index"] for r in body["results"]] in ([0, 2], [2, 0])  # bananas last, cut
    scores = [r["relevance_score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert body["results"][0]["document"]["text"] == DOCS[body["results"][0]["index"]]
    assert body["usage"]["total_tokens"] > 0
    plain = http.post("/v1/rerank", json={"model": EMBED, "query": "Where is Paris?",
                                          "documents": [{"text": d} for d in DOCS],
                                          "return_documents": False}).json()
    assert len(plain["results"]) == 3 and "document" not in plain["results"][0]
    assert plain["results"][-1]["index"] == 1


def test_score_pairs(http: httpx.Client) -> None:
    one_to_many = http.post("/v1/score", json={"model": EMBED, "text_1": "Where is Paris?",
                                               "text_2": DOCS}).json()
    scores = [d["score"] for d in one_to_many["data"]]
    assert len(scores) == 3 and scores[1] < min(scores[0], scores[2])
    pairwise = http.post("/v1/score", json={"model": EMBED, "text_1": DOCS, "text_2": DOCS})
    assert [round(d["score"], 4) for d in pairwise.json()["data"]] == [1.0, 1.0, 1.0]
    bad = http.post("/v1/score", json={"model": EMBED, "text_1": ["a", "b"],
                                       "text_2": ["a", "b", "c"]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "text_2"
    chat = http.post("/v1/rerank", json={"model": "smollm2-135m-instruct", "query": "q",
                                         "documents": ["d"]})
    assert chat.status_code == 400  # a chat model has no embeddings to rank with
    missing = http.post("/v1/rerank", json={"model": "nope", "query": "q", "documents": ["d"]})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InferdProcess,
                                                                          InferdProcess]]:
    tmp = Path(tmp_path_factory.mktemp("rerank"))
    config = tmp / "upstream.yaml"
    config.write_text(yaml.safe_dump({"models": [{"name": "echo", "kind": "echo"}]}))
    with InferdProcess(tmp / "up", "--config", str(config), "--no-bundled",
                       env={"INFERD_AUTH": "off"}) as upstream:
        gw_config = tmp / "gateway.yaml"
        replica = {"kind": "http", "url": upstream.url, "upstream_model": "echo"}
        gw_config.write_text(yaml.safe_dump({"remote_models": [
            {"name": "ranker", "replicas": [
                {**replica, "options": {"capabilities": ["embeddings", "rerank", "score"]}}]},
            {"name": "embedder", "replicas": [replica]}]}))
        with InferdProcess(tmp / "gw", "--config", str(gw_config), "--no-bundled",
                           env={"INFERD_AUTH": "off"}) as gw:
            yield upstream, gw


def served(upstream: InferdProcess, endpoint: str) -> float:
    total = 0.0
    for line in httpx.get(upstream.url + "/metrics").text.splitlines():
        if line.startswith("inferd_requests_total{") and f'endpoint="{endpoint}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_passed_through_to_a_replica_that_serves_rerank(
        gateway: tuple[InferdProcess, InferdProcess]) -> None:
    upstream, gw = gateway
    body = {"query": "alpha", "documents": ["alpha", "beta gamma"]}
    before = served(upstream, "rerank")
    ranked = httpx.post(gw.url + "/v1/rerank", json={"model": "ranker", **body}).json()
    assert ranked["model"] == "ranker" and ranked["results"][0]["index"] == 0
    assert served(upstream, "rerank") == before + 1  # the upstream's own /v1/rerank answered
    scored = httpx.post(gw.url + "/v1/score", json={"model": "ranker", "text_1": "alpha",
                                                   "text_2": ["alpha"]}).json()
    assert round(scored["data"][0]["score"], 4) == 1.0
    # a replica without the capability: the gateway ranks with the replica's embeddings
    embeddings_before = served(upstream, "embeddings")
    local = httpx.post(gw.url + "/v1/rerank", json={"model": "embedder", **body}).json()
    assert local["results"][0]["index"] == 0
    assert served(upstream, "rerank") == before + 1
    assert served(upstream, "embeddings") == embeddings_before + 1
