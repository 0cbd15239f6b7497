#!/usr/bin/env bash
# Install axe-core (pinned in tests/e2e/axe/package-lock.json) into .cache/axe for the web UI's
# accessibility test, with npm from the registry; nothing is done when that version is there.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.cache/axe
if ! command -v npm >/dev/null; then
  echo "npm is missing: the UI accessibility test will be skipped" >&2
  exit 0
fi
if [ -f "$DEST/package-lock.json" ] && cmp -s tests/e2e/axe/package-lock.json "$DEST/package-lock.json" \
    && [ -f "$DEST/node_modules/axe-core/axe.min.js" ]; then
  exit 0
fi
mkdir -p "$DEST"
cp tests/e2e/axe/package.json tests/e2e/axe/package-lock.json "$DEST/"
(cd "$DEST" && npm ci --ignore-scripts --no-audit --no-fund --silent)
