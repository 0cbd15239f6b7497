"""The 3-minute soak (``bench/soak.py --minutes 3``): mixed load at half the measured capacity,
no request failing, memory and descriptors not growing past their bounds. The 30-minute run
is the figure of docs/performance/reliability.md (``make soak``)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT

MINUTES = 3


@pytest.mark.soak
@pytest.mark.timeout(MINUTES * 60 + 300)
def test_three_minutes_of_mixed_load_without_errors_or_growth() -> None:
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "soak.py"), "--minutes",
                          str(MINUTES)], capture_output=True, text=True, cwd=ROOT,
                         timeout=MINUTES * 60 + 240)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-5000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["errors"] == 0 and summary["problems"] == 0
    assert summary["requests"] > 0
    assert summary["rss_mb_last"] - summary["rss_mb_first"] <= 64
    assert summary["fds_last"] - summary["fds_first"] <= 32
    reports = [line for line in run.stdout.splitlines() if line.startswith("min ")]
    assert len(reports) == MINUTES  # one report a minute
