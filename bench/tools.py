"""Installs what the gateway benchmark needs, when it is missing.

* nginx-light and wrk from Debian (``apt-get``; needs root, as on the project's machines);
* LiteLLM's proxy in its own virtual environment, ``.bench/litellm`` (never in inferd's);
* Portkey's gateway from npm under ``.bench/portkey``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / ".bench"
LITELLM_VENV = BENCH / "litellm"
LITELLM_BIN = LITELLM_VENV / "bin" / "litellm"
PORTKEY_DIR = BENCH / "portkey"
PORTKEY_BIN = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=cwd, check=True)


def ensure(litellm: bool = True, portkey: bool = True) -> None:
    missing = [tool for tool in ("nginx", "wrk") if shutil.which(tool) is None
               and not Path(f"/usr/sbin/{tool}").exists()]
    if missing:
        _run(["apt-get", "update"])
        _run(["apt-get", "install", "-y", "nginx-light", "wrk"])
    if litellm and not LITELLM_BIN.exists():
        _run([sys.executable, "-m", "venv", str(LITELLM_VENV)])
        _run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"])
    if portkey and not PORTKEY_BIN.exists():
        PORTKEY_DIR.mkdir(parents=True, exist_ok=True)
        _run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(PORTKEY_DIR),
              "@portkey-ai/gateway"])
