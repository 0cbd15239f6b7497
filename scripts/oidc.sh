#!/usr/bin/env bash
# Install the OpenID provider the single sign-on tests run (oidc-provider, pinned in
# tests/e2e/oidc/package-lock.json) into .cache/oidc, with npm from the registry; nothing is
# done when that version is there. Without Node the SSO tests are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.cache/oidc
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
  echo "node/npm are missing: the single sign-on tests will be skipped" >&2
  exit 0
fi
if [ -f "$DEST/package-lock.json" ] && cmp -s tests/e2e/oidc/package-lock.json "$DEST/package-lock.json" \
    && [ -f "$DEST/node_modules/oidc-provider/package.json" ]; then
  exit 0
fi
mkdir -p "$DEST"
cp tests/e2e/oidc/package.json tests/e2e/oidc/package-lock.json "$DEST/"
(cd "$DEST" && npm ci --ignore-scripts --no-audit --no-fund --silent)
