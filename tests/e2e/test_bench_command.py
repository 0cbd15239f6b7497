"""``inferd bench`` (what ``make stresstest`` runs) against ``inferd serve`` with echo models:
the requests it counts are the ones the server answered, with streams' time to first token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from inferd.loadtest import parse_mix, percentile
from tests.helpers import ROOT, InferdProcess

ECHO = json.dumps([{"name": "echo", "kind": "echo"}])


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "inferd", "bench", *args], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
                          capture_output=True, text=True, timeout=600)



def test_bench_counts_what_the_server_answered(tmp_path: Path) -> None:
    with InferdProcess(tmp_path, "--no-bundled", env={"INFERD_MODELS": ECHO,
                                                      "INFERD_USAGE_FLUSH_SECONDS": "0.1"}
                       ) as server:
        done = _bench("--url", server.url, "--model", "echo", "-n", "30", "-c", "4",
                      "--mix", "chat=1,stream=1,health=1", "--json")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["requests"] == 30 and report["succeeded"] == 30, report
        assert report["errors"] == {}
        assert set(report["by_kind"]) == {"chat", "stream", "health"}
        assert sum(report["by_kind"].values()) == 30
        assert report["ttft"]["p50"] is not None  # the streams' first tokens were seen
        assert report["latency"]["p99"] >= report["latency"]["p50"] > 0
        assert report["completion_tokens"] > 0
        # errors are counted by status and code, not hidden
        bad = _bench("--url", server.url, "--model", "no-such-model", "-n", "3", "-c", "1",
                     "--json")
        assert bad.returncode == 0, bad.stderr
        failed = json.loads(bad.stdout)
        assert failed["failed"] == 3 and failed["errors"] == {"404 model_not_found": 3}


def test_bench_refuses_a_bad_mix() -> None:
    done = _bench("--mix", "chat=1,teleport=2", "-n", "1")
    assert done.returncode == 2
    assert "unknown kind 'teleport'" in done.stderr


def test_mix_and_percentiles() -> None:
    assert parse_mix("chat=3,stream,health=0.5") == {"chat": 3.0, "stream": 1.0, "health": 0.5}
    with pytest.raises(ValueError, match="positive weight"):
        parse_mix("chat=0")
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([], 50) is None
