"""An app built without an OTLP endpoint neither loads OpenTelemetry's tracing SDK and exporter
nor wraps a request in a span (each probe is a fresh interpreter: this one has them loaded).

(redis-py loads the SDK's metrics package at import when the SDK is installed, for metrics of
its own that stay off unless an application turns them on: only the tracing parts are
inferd's.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}

PROBE = """
import json, sys
from inferd.app import create_app
from inferd.http.tracing import TraceRequests
from inferd.settings import Settings
app = create_app(Settings(data_dir=sys.argv[1]))
TRACING = ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http")
print(json.dumps({"sdk": any(m in sys.modules for m in TRACING),
                  "traced": any(m.cls is TraceRequests for m in app.user_middleware)}))
"""


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, {"sdk": False, "traced": False}),
    ({**ENDPOINT, "OTEL_SDK_DISABLED": "true"}, {"sdk": False, "traced": False}),
    (ENDPOINT, {"sdk": True, "traced": True}),
])
def test_without_an_endpoint_the_app_neither_imports_the_sdk_nor_traces(
        tmp_path: Path, environ: dict[str, str], expected: dict[str, bool]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], cwd=ROOT,
                          env={**env, "PYTHONPATH": str(ROOT / "src"), **environ},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == expected
