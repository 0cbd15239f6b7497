"""What the shipped dashboard and alerts query is what a running inferd exports: every inferd
metric they name is in ``/metrics`` with every label they match or group by."""

from __future__ import annotations

import httpx
import pytest
from openai import NotFoundError, OpenAI
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import wait_for
from tests.monitoring import (
    TARGET_LABELS,
    dashboard_queries,
    grouping_labels,
    rule_queries,
    selectors,
)

CHAT_MODEL = "smollm2-135m-instruct"


def exported(http: httpx.Client) -> dict[str, set[str]]:
    """``{series name: its label names}`` of the server's ``/metrics``."""
    answer = http.get("/metrics")
    assert answer.status_code == 200
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


@pytest.fixture(scope="module")
def series(client: OpenAI, http: httpx.Client) -> dict[str, set[str]]:
    """The metrics after a streamed answer (time to first token, inter-token latency), one
    in one piece and a request for a model that does not exist, with a team that has a money
    budget (its budget use)."""
    made = http.post("/admin/v1/teams", json={"name": "monitored-budget", "max_budget": 5.0})
    assert made.status_code == 201, made.text
    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        max_tokens=12,
        temperature=0,
        stream=True,
        messages=[{"role": "user", "content": "Count from one to ten."}],
    )
    texts = [c.choices[0].delta.content for c in stream if c.choices]
    assert len([t for t in texts if t]) >= 2  # two chunks of text: one gap between them
    client.chat.completions.create(
        model=CHAT_MODEL, max_tokens=4, messages=[{"role": "user", "content": "Hi"}]
    )
    with pytest.raises(NotFoundError):
        client.chat.completions.create(
            model="no-such-model", max_tokens=4, messages=[{"role": "user", "content": "Hi"}]
        )

    def with_the_team_budget() -> dict[str, set[str]] | None:
        found = exported(http)
        return found if "inferd_team_budget_used_ratio" in found else None

    # the team budgets are read at most every few seconds: until the new team's is
    return wait_for(with_the_team_budget, interval=0.5, what="the team's budget use in /metrics")


@pytest.mark.parametrize("where,expr", dashboard_queries() + rule_queries())
def test_every_metric_and_label_a_query_uses_is_exported(
    series: dict[str, set[str]], where: str, expr: str
) -> None:
    used = [(name, labels) for name, labels in selectors(expr) if name.startswith("inferd_")]
    for name, labels in used:
        assert name in series, (where, name)
        assert labels <= series[name] | TARGET_LABELS, (where, name, labels - series[name])
    for label in grouping_labels(expr):  # each series aggregated has the labels kept
        for name, _ in used:
            assert label in series[name] | TARGET_LABELS, (where, name, label)


def test_the_streaming_latencies_and_the_job_queue_are_per_model(
    series: dict[str, set[str]],
) -> None:
    for name in (
        "inferd_time_to_first_token_seconds_bucket",
        "inferd_inter_token_latency_seconds_bucket",
    ):
        assert series[name] == {"model", "le"}
    assert series["inferd_jobs_pending"] == {"model"}
    assert series["inferd_jobs_oldest_pending_age_seconds"] == {"model"}


def test_the_budget_series_are_there_before_any_budget_is_reached(
    series: dict[str, set[str]], http: httpx.Client
) -> None:
    """The budget alerts count from 0 at each level (the alert rules see an increase from
    the first one), and each team with a money budget has its budget use."""
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(http.get("/metrics").text)
        for s in family.samples
    }
    for level in ("key", "user", "team"):
        assert samples[("inferd_budget_alerts_total", (("level", level),))] == 0
    assert samples[("inferd_team_budget_used_ratio", (("team", "monitored-budget"),))] == 0
