"""``kill -9`` of ``inferd serve`` at random points of job and batch processing, in a loop
(``bench/crash.py``), on SQLite and PostgreSQL: no accepted job lost, each result stored and
billed once, event logs consistent, no orphaned rows, batch counts adding up.

``INFERD_CRASH_KILLS`` sets the number of kills (4 here so that ``make test`` stays fast;
the script's own default, 50, is the figure of docs/performance/reliability.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT, require_service

KILLS = int(os.environ.get("INFERD_CRASH_KILLS", "4"))


@pytest.mark.timeout(900)
@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgresql",
                                                             marks=pytest.mark.postgres)])
def test_kill_9_in_a_loop_loses_and_duplicates_nothing(database: str) -> None:
    if database == "postgresql":
        require_service("postgresql")
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "crash.py"), "--kills",
                          str(KILLS), "--database", database],
                         capture_output=True, text=True, timeout=850, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-5000:]
    totals = json.loads(run.stdout.strip().splitlines()[-1])
    assert totals["kills"] == KILLS
    assert totals["jobs_accepted"] > 0 and totals["batches_accepted"] > 0
    assert totals["jobs_lost"] == 0 and totals["problems"] == 0
    assert totals["jobs_completed"] == totals["jobs_in_database"] >= totals["jobs_accepted"]
