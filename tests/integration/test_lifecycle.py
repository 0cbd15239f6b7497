"""Cluster safety at start, seen from the command line: ``inferd gateway`` refusing unsafe
settings with a message, not a trace (the rules themselves: tests/unit/test_lifecycle.py)."""

from __future__ import annotations

FERNET = "dGhpcyBpcyBhIGZlcm5ldCBrZXkgb2YgMzIgYnl0ZXM="


def test_the_command_refuses_with_a_message_not_a_trace(tmp_path: object) -> None:
    import os
    import subprocess
    import sys

    from tests.helpers import ROOT, free_port

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"),
           "INFERD_ADMIN_KEY": "sk-example-admin-key-0123456789", "INFERD_SECRET_KEY": FERNET}
    done = subprocess.run([sys.executable, "-m", "inferd", "gateway", "--host", "0.0.0.0",
                           "--port", str(free_port()), "--data-dir", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "INFERD_ADMIN_KEY looks like a placeholder" in done.stderr
    assert "INFERD_ENV=development" in done.stderr
    assert "Traceback" not in done.stderr
