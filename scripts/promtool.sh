#!/usr/bin/env bash
# Install promtool, Prometheus's checker, into .venv/bin if it is missing: the tests check the
# alerting rules and the dashboard's queries with it (tests/deploy/test_monitoring.py). It is
# taken from Debian's prometheus package without installing that package (which would start a
# Prometheus server): the package is downloaded and only its promtool binary is copied.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v promtool >/dev/null || [ -x .venv/bin/promtool ]; then exit 0; fi
mkdir -p .venv/bin
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! (cd "$work" && apt-get download -q prometheus >/dev/null 2>&1); then
  if [ "$(id -u)" != 0 ]; then
    echo "promtool is missing and this is not root: the rules checks will be skipped" >&2
    exit 0
  fi
  apt-get update -q >/dev/null
  (cd "$work" && apt-get download -q prometheus >/dev/null)
fi
dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
install -m 0755 "$work/root/usr/bin/promtool" .venv/bin/promtool
