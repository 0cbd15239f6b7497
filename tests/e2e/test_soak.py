"""The short soak (``bench/soak.py --minutes 1 --report 20``): mixed load at half the measured
capacity, no request failing, memory and descriptors not growing past their bounds from the
first report to the last. The 30-minute run is the figure of docs/performance/reliability.md
(``make soak``); ``INFERD_SOAK_MINUTES`` runs a longer one here (a report a minute from 3
minutes on)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

MINUTES = float(os.environ.get("INFERD_SOAK_MINUTES", "1"))
# at least three reports (the first compared with the last) however short the run
REPORT_SECONDS = 60.0 if MINUTES >= 3 else MINUTES * 20
REPORTS = round(MINUTES * 60 / REPORT_SECONDS)


# serial: load from other tests would move the server's descriptors and memory between the
# first report and the last, which are compared (make test runs it alone)
@pytest.mark.serial
@pytest.mark.soak
@pytest.mark.timeout(MINUTES * 60 + 300)
def test_mixed_load_without_errors_or_growth() -> None:
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "soak.py"), "--minutes",
                          str(MINUTES), "--report", str(REPORT_SECONDS)],
                         capture_output=True, text=True, cwd=ROOT, timeout=MINUTES * 60 + 240)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-5000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["errors"] == 0 and summary["problems"] == 0
    assert summary["requests"] > 0
    assert summary["rss_mb_last"] - summary["rss_mb_first"] <= 64
    assert summary["fds_last"] - summary["fds_first"] <= 32
    reports = [line for line in run.stdout.splitlines() if line.startswith("min ")]
    assert len(reports) == REPORTS  # one report an interval
