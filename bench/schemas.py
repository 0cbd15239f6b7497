"""Generated JSON schemas through every endpoint that takes one: the long run of the property
test of the schema bounds (``tests/e2e/test_schema_property.py``).

    .venv/bin/python bench/schemas.py --examples 2000

Starts one ``inferd serve`` with the real bundled model, sends the adversarial schemas of
``tests/schema_fuzzing.py`` through every endpoint, then ``--examples`` generated schemas
(each through an endpoint hypothesis picks), and prints the counts: schemas tried, answered,
refused by each bound, other 4xx, crashes, failures (5xx, an error out of shape, no answer),
and the slowest requests. Exits 1 on any crash or failure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import schema_fuzzing
from tests.helpers import InferdProcess


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=500, help="generated schemas")
    parser.add_argument("--seed", type=int, default=None,
                        help="repeat a run's examples (default: new examples every run)")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, \
            InferdProcess(Path(tmp)).start(timeout=600) as server, \
            httpx.Client(base_url=server.url, timeout=300) as client:
        assert server.proc is not None
        tally = schema_fuzzing.run(client, server.proc, args.examples, args.seed,
                                   fail_fast=False)
        alive = server.proc.poll() is None
        if not alive:
            print(server.log())
    for line in tally.failures:
        print(line)
    print(f"generated examples asked: {args.examples} (+ {len(schema_fuzzing.ADVERSARIAL)} "
          f"adversarial x {len(schema_fuzzing.ENDPOINTS)} endpoints)")
    print(tally.summary())
    print(f"server alive at the end: {alive}; wall time {time.perf_counter() - started:.0f} s")
    return 1 if tally.failures or tally.crashes or not alive else 0


if __name__ == "__main__":
    sys.exit(main())
