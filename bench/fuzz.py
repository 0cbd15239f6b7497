"""Fuzz every operation of inferd's OpenAPI document with schemathesis, longer than the tests.

    .venv/bin/python bench/fuzz.py --examples 50

Starts two ``inferd serve`` (echo models; the destructive operations get their own, see
``tests/fuzzing.py``), calls every operation with generated valid and invalid requests, with
an admin key and a user key, and prints the operations fuzzed, requests sent, 5xx found and
schema failures (each failure with a curl command that repeats it). Exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import fuzzing


def _progress(line: str) -> None:
    if not line.endswith("..."):
        print(line, file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=50,
                        help="examples per operation, key and mode (valid / invalid)")
    parser.add_argument("--seed", type=int, default=None,
                        help="repeat a run's examples (default: new examples every run)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, fuzzing.servers(Path(tmp)) as (main, other):
        tally = fuzzing.fuzz(main.url, [fuzzing.ADMIN_KEY, main.user_key],
                             examples=args.examples, destructive=False, seed=args.seed,
                             progress=_progress)
        tally.add(fuzzing.fuzz(other.url, [other.user_key, fuzzing.ADMIN_KEY],
                               examples=args.examples, destructive=True, seed=args.seed,
                               progress=_progress))
    for line in tally.server_errors + tally.schema_failures:
        print(line)
    print(f"examples per operation, key and mode: {args.examples}")
    print(tally.summary())
    return 1 if tally.server_errors or tally.schema_failures else 0


if __name__ == "__main__":
    sys.exit(main())
