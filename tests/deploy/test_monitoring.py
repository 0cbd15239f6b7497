"""The shipped monitoring: the alerting rules and the example Prometheus configuration pass
``promtool``, the alerts fire when they should (promtool's rule unit tests), the Kubernetes
PrometheusRule carries the same rules, and the Grafana dashboard is one Grafana loads, with
queries that are PromQL. That every metric and label they use is exported by a running inferd
is tested in tests/e2e/test_monitoring.py."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.monitoring import (
    ALERTS,
    PROMETHEUS_RULE,
    SCRAPE_CONFIG,
    alert_rules,
    dashboard,
    dashboard_queries,
    panels,
    promtool,
)


def run_promtool(*args: str, ok: bool = True) -> str:
    proc = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120)
    output = proc.stdout + proc.stderr
    assert (proc.returncode == 0) == ok, output
    return output


def test_the_alert_rules_pass_promtool() -> None:
    output = run_promtool("check", "rules", str(ALERTS))
    assert f"SUCCESS: {len(alert_rules())} rules found" in output


def test_promtool_refuses_a_broken_rule(tmp_path: Path) -> None:
    """The check above is a real one: an expression that does not parse fails it."""
    broken = tmp_path / "broken.yml"
    broken.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "inferd",
                        "rules": [
                            {"alert": "Broken", "expr": "sum(rate(inferd_requests_total[5m])"}
                        ],
                    }
                ]
            }
        )
    )
    assert "parse error" in run_promtool("check", "rules", str(broken), ok=False)


def test_the_example_prometheus_configuration_passes_promtool() -> None:
    output = run_promtool("check", "config", str(SCRAPE_CONFIG))
    assert f"SUCCESS: {len(alert_rules())} rules found" in output  # its rule file, checked


def test_the_kubernetes_prometheus_rule_carries_the_same_alerts() -> None:
    rule = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]


def test_the_dashboard_queries_are_promql(tmp_path: Path) -> None:
    """Each query, with Grafana's variables put in, checked by promtool as a recording rule."""
    queries = dashboard_queries()
    rules = tmp_path / "dashboard.yml"
    rules.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "dashboard",
                        "rules": [
                            {"record": f"dashboard:query_{i}", "expr": expr}
                            for i, (_, expr) in enumerate(queries)
                        ],
                    }
                ]
            }
        )
    )
    assert f"SUCCESS: {len(queries)} rules found" in run_promtool("check", "rules", str(rules))


def _series(name: str, values: str, **labels: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def _alert(
    name: str, at: str, labels: dict[str, str] | None = None, **annotations: str
) -> dict[str, Any]:
    """The alerts ``name`` has firing at ``at``: one with ``labels`` and ``annotations`` (as
    their templates render them), or none."""
    alerts = [] if labels is None else [{"exp_labels": labels, "exp_annotations": annotations}]
    return {"eval_time": at, "alertname": name, "exp_alerts": alerts}


def test_the_alerts_fire_on_what_they_watch(tmp_path: Path) -> None:
    """promtool's rule unit tests, one sample a minute: model ``m`` answers 1 request/s of
    which 0.2/s fail with 500 and its time to first token is 5-10 s, its oldest pending job
    ages from 0, and its replica ``r1`` turns unhealthy at minute 5; model ``ok`` is fine."""
    ttft = "inferd_time_to_first_token_seconds_bucket"
    series = [
        _series("inferd_requests_total", "0+60x40", model="m", endpoint="chat", status="200"),
        _series("inferd_requests_total", "0+12x40", model="m", endpoint="chat", status="500"),
        _series("inferd_requests_total", "0+60x40", model="ok", endpoint="chat", status="200"),
        _series(ttft, "0x40", model="m", le="5.0"),
        _series(ttft, "0+60x40", model="m", le="10.0"),
        _series(ttft, "0+60x40", model="m", le="+Inf"),
        _series(ttft, "0+60x40", model="ok", le="5.0"),
        _series(ttft, "0+60x40", model="ok", le="+Inf"),
        _series(
            "inferd_jobs_oldest_pending_age_seconds", "0+60x40", model="m", instance="gateway-1"
        ),
        _series("inferd_jobs_oldest_pending_age_seconds", "0x40", model="ok", instance="gateway-1"),
        _series(
            "inferd_replica_healthy", "1x5 0x35", model="m", replica="r1", instance="gateway-1"
        ),
        _series("inferd_replica_healthy", "1x40", model="m", replica="r2", instance="gateway-1"),
        _series("inferd_usage_records_pending", "0x40", instance="gateway-1"),
    ]
    warning = {"severity": "warning"}
    tests = [
        _alert("InferdHighErrorRate", "8m"),  # above 5%, not yet for 10 minutes
        _alert(
            "InferdHighErrorRate",
            "20m",
            {**warning, "model": "m"},
            summary="More than 5% of the requests for m fail with a 5xx status.",
            description="16.67% of the requests answered 5xx over 5 minutes.",
        ),
        _alert("InferdSlowTimeToFirstToken", "10m"),
        _alert(
            "InferdSlowTimeToFirstToken",
            "25m",
            {**warning, "model": "m"},
            summary="The time to first token of m is above 5 s at the 95th percentile.",
            description="p95 9.75s over 5 minutes: the replicas are saturated or slow.",
        ),
        _alert("InferdJobsWaiting", "18m"),  # 900 s old at 15 m: firing from 21 m
        _alert(
            "InferdJobsWaiting",
            "22m",
            {**warning, "model": "m"},
            summary="A job for m has been pending for more than 15 minutes.",
            description="The oldest pending job has waited 22m 0s; check the workers of "
            "the model or raise their count.",
        ),
        _alert("InferdReplicaDown", "12m"),
        _alert(
            "InferdReplicaDown",
            "20m",
            {**warning, "model": "m", "replica": "r1"},
            summary="Replica r1 of m has been unhealthy for 10 minutes.",
        ),
        _alert("InferdModelWithoutReplica", "30m"),  # r2 still serves m
        _alert("InferdUsageRecordsBacklog", "30m"),
    ]
    unit = tmp_path / "alerts_test.yml"
    unit.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(ALERTS)],
                "evaluation_interval": "1m",
                "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": tests}],
            }
        )
    )
    assert "SUCCESS" in run_promtool("test", "rules", str(unit))


def test_the_budget_alerts_fire_on_what_they_watch(tmp_path: Path) -> None:
    """promtool's rule unit tests of the money budgets, one sample a minute: a team's budget
    alert is counted at minute 11 (a key's never), and team ``a`` spends 50%, then 85% from
    minute 6, then 120% from minute 12 of its budget; team ``b`` 10%."""
    ratio = "inferd_team_budget_used_ratio"
    series = [
        _series("inferd_budget_alerts_total", "0x10 1x30", level="team", instance="gateway-1"),
        _series("inferd_budget_alerts_total", "0x40", level="key", instance="gateway-1"),
        _series("inferd_budget_alerts_total", "0x40", level="user", instance="gateway-1"),
        _series(ratio, "0.5x5 0.85x5 1.2x30", team="a", instance="gateway-1"),
        _series(ratio, "0.5x5 0.85x5 1.2x30", team="a", instance="gateway-2"),
        _series(ratio, "0.1x40", team="b", instance="gateway-1"),
    ]
    tests = [
        _alert("InferdBudgetAlert", "5m"),
        _alert(
            "InferdBudgetAlert",
            "12m",
            {"severity": "info", "level": "team"},
            summary="A team's money budget reached its alert percentage.",
            description="inferd logs a warning that names the team and its budget.",
        ),
        _alert("InferdBudgetAlert", "40m"),  # counted once: no longer in the last 15 minutes
        _alert("InferdTeamBudgetAt80Percent", "3m"),
        _alert(
            "InferdTeamBudgetAt80Percent",
            "8m",
            {"severity": "warning", "team": "a"},
            summary="Team a has spent 80% of its money budget for this period.",
            description="85% of the budget is spent.",
        ),
        _alert("InferdTeamBudgetAt80Percent", "20m"),  # used up: the other alert says so
        _alert("InferdTeamBudgetUsedUp", "8m"),
        _alert(
            "InferdTeamBudgetUsedUp",
            "20m",
            {"severity": "critical", "team": "a"},
            summary="Team a has used up its money budget for this period.",
            description="Its keys get 429 insufficient_quota until the period ends or the "
            "budget is raised.",
        ),
    ]
    unit = tmp_path / "budget_alerts_test.yml"
    unit.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(ALERTS)],
                "evaluation_interval": "1m",
                "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": tests}],
            }
        )
    )
    assert "SUCCESS" in run_promtool("test", "rules", str(unit))


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    """What Grafana needs to import it anywhere: a uid, a Prometheus data source variable
    that every panel and query uses, unique panel ids, panels inside the 24-column grid that
    do not overlap, and queries with unique refIds."""
    board = dashboard()
    assert board["uid"] and board["title"] and board["id"] is None
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    sources = [v for v in variables.values() if v["type"] == "datasource"]
    assert [v["query"] for v in sources] == ["prometheus"]
    source = {"type": "prometheus", "uid": "${" + sources[0]["name"] + "}"}
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == source
    every = list(panels(board))
    ids = [p["id"] for p in every]
    assert all(isinstance(i, int) for i in ids) and len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in every:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, (panel["title"], cells.get((x, y)))
                cells[x, y] = panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "stat", "gauge", "bargauge", "table"}
        assert panel["datasource"] == source, panel["title"]
        targets = panel["targets"]
        assert targets and all(t["datasource"] == source and t["expr"].strip() for t in targets), (
            panel["title"]
        )
        refs = [t["refId"] for t in targets]
        assert len(refs) == len(set(refs)), panel["title"]


def test_the_dashboard_shows_what_an_operator_watches() -> None:
    exprs = " ".join(expr for _, expr in dashboard_queries())
    for wanted in (
        "sum by (model, status) (rate(inferd_requests_total",  # request rate
        'status=~"5.."',  # error rate
        "histogram_quantile(0.5, sum by (model, le) "
        "(rate(inferd_time_to_first_token_seconds_bucket",
        "histogram_quantile(0.95, sum by (model, le) "
        "(rate(inferd_time_to_first_token_seconds_bucket",
        "histogram_quantile(0.95, sum by (model, le) "
        "(rate(inferd_inter_token_latency_seconds_bucket",
        "rate(inferd_tokens_total",  # tokens/s
        "inferd_replica_in_flight",
        "inferd_replica_healthy",  # replicas
        "inferd_gateway_queue_depth",
        "(rate(inferd_gateway_queue_wait_seconds_bucket",  # fair queueing: time to scale out
        "inferd_jobs_pending",
        "inferd_jobs_oldest_pending_age_seconds",  # the job queue
        "inferd_usage_records_pending",
        "max by (team) (inferd_team_budget_used_ratio)",  # budgets
        "increase(inferd_budget_alerts_total",
    ):
        assert wanted in exprs, wanted
