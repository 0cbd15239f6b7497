"""The queries of the shipped monitoring (deploy/grafana, deploy/prometheus) and what they use:
the metric names and label names, read from the PromQL with a scanner of its tokens (the
syntax itself is checked by ``promtool``, tests/deploy/test_monitoring.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import ROOT

DASHBOARD = ROOT / "deploy" / "grafana" / "inferd-dashboard.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
SCRAPE_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
PROMETHEUS_RULE = ROOT / "deploy" / "k8s" / "components" / "monitoring" / "prometheusrule.yaml"
# Labels Prometheus adds to every series it scrapes (not in a target's /metrics).
TARGET_LABELS = frozenset({"instance", "job"})
# What Grafana puts in the queries before it sends them: the values of its variables.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "${model}": ".*", "$model": ".*"}

# PromQL words that are not metric names (functions, aggregations, keywords).
_WORDS = frozenset(
    """
    sum avg min max count stddev stdvar topk bottomk quantile count_values group by
    without on ignoring group_left group_right and or unless bool offset rate irate
    increase delta idelta deriv histogram_quantile abs ceil floor round clamp clamp_min
    clamp_max min_over_time max_over_time avg_over_time sum_over_time count_over_time
    last_over_time absent absent_over_time changes resets time vector scalar
    label_replace label_join sort sort_desc predict_linear timestamp exp ln log2 log10
    sqrt inf nan
    """.split()  # noqa: SIM905
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?")
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those in collapsed rows too."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries() -> list[tuple[str, str]]:
    """``(where, PromQL)`` of every panel target and query variable, as Grafana sends them."""
    board = dashboard()
    out = []
    for panel in panels(board):
        for target in panel.get("targets", []):
            out.append((f"panel {panel['title']!r} {target['refId']}", grafana(target["expr"])))
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            query = query["query"] if isinstance(query, dict) else query
            # label_values(metric, label): the series of the metric that have the label
            found = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
            assert found, query
            out.append((f"variable {variable['name']}", f"group by ({found[2]}) ({found[1]})"))
    return out


def alert_rules(path: Path = ALERTS) -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def rule_queries() -> list[tuple[str, str]]:
    return [(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]


def grafana(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, expr  # a variable the dashboard does not define
    return expr


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """``(metric, label names of its matchers)`` of every series selector in ``expr``."""
    code = _GROUPING.sub(" ", _STRING.sub('""', expr))
    code = re.sub(r"\[[^\]]*\]", " ", code)  # ranges and subqueries: [5m], [15m:1m]
    out = []
    for match in _SELECTOR.finditer(code):
        name, matchers = match[1], match[2] or ""
        following = code[match.end() :].lstrip()
        if name in _WORDS or following.startswith("("):  # a keyword or a function call
            continue
        if code[: match.start()].rstrip().endswith(("{", ",")) and not matchers:
            continue  # a label name inside a matcher list
        out.append((name, set(_MATCHER.findall(matchers))))
    return out


def grouping_labels(expr: str) -> set[str]:
    """The label names of the ``by``, ``without``, ``on`` and ``ignoring`` clauses."""
    return {
        label.strip()
        for found in _GROUPING.findall(_STRING.sub('""', expr))
        for label in found.split(",")
        if label.strip()
    }


def promtool() -> str:
    """Prometheus's checker, on the PATH or where scripts/promtool.sh (``make setup-dev``)
    puts it; skips the test (fails it in CI) when it is missing."""
    found = shutil.which("promtool")
    local = ROOT / ".venv" / "bin" / "promtool"
    if found is None and os.access(local, os.X_OK):
        found = str(local)
    if found is None:
        message = "promtool is missing: run `bash scripts/promtool.sh`"
        if os.environ.get("INFERD_REQUIRE_SERVICES") == "1":
            pytest.fail(message + " (INFERD_REQUIRE_SERVICES=1)")
        pytest.skip(message)
    return found
