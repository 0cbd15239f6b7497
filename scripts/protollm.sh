#!/usr/bin/env bash
# Create .venv-protollm: the queued generate system's real package (protollm-api, pinned with
# constraints-protollm.txt) for the tests that run its worker and backend code against inferd
# (tests/cluster/test_queued_generate.py). A venv of its own: its pins clash with inferd's.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv-protollm/bin/python ]; then
  "$PYTHON" -m venv .venv-protollm
fi
.venv-protollm/bin/python -m pip install -q --no-deps -c constraints-protollm.txt protollm-api
grep -v '^protollm-api\|^#' constraints-protollm.txt \
  | xargs .venv-protollm/bin/python -m pip install -q -c constraints-protollm.txt
.venv-protollm/bin/python -c "import protollm_api.worker.services.broker, protollm_api.backend.broker"
echo "setup complete: protollm-api in .venv-protollm"
