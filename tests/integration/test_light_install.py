"""The base install: the roles that host no model import no machine-learning runtime, checked
in a fresh interpreter (the refusals of a missing runtime: tests/unit/test_light_install.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "diffusers", "llama_cpp", "numpy", "tokenizers",
         "safetensors", "PIL", "huggingface_hub")
# The modules that run a model in-process: imported only when such a model is built.
ENGINE_MODULES = ("inferd.engines.llamacpp", "inferd.engines.embeddings",
                  "inferd.engines.diffusers", "inferd.engines.diffusion_tiny")
# Scripts that run inside another program (alembic), not modules to import.
NOT_MODULES = ("inferd.__main__", "inferd.store.migrations")

_PROBE = """
import json, sys, importlib, pathlib
import inferd
skip = tuple(sys.argv[1].split(","))
top = pathlib.Path(inferd.__file__).parent
# the files themselves (pkgutil.walk_packages would import the engine packages to walk them)
names = [".".join(("inferd", *f.relative_to(top).with_suffix("").parts)).removesuffix(".__init__")
         for f in sorted(top.rglob("*.py"))]
names = [n for n in names if not n.startswith(skip)]
for name in names:
    importlib.import_module(name)
from inferd.app import create_app
from inferd.settings import load_settings
for role in ("gateway", "worker"):
    settings = load_settings(None, bundled_models=False).with_values(models=[], role=role)
    create_app(settings)
heavy = sorted(m for m in sys.argv[2].split(",") if m in sys.modules)
print(json.dumps({"imported": len(names), "heavy": heavy}))
"""


def test_every_module_but_the_engines_imports_no_ml_runtime(tmp_path: Path) -> None:
    """In a fresh interpreter (this one may have loaded them for other tests): every module of
    inferd outside the in-process engines (cli, app factory, http, jobs, the worker, routing,
    store...) and the gateway and worker apps built, and none of the runtimes is loaded."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "INFERD_DATA_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", _PROBE, ",".join(ENGINE_MODULES + NOT_MODULES),
                           ",".join(HEAVY)], env=env, capture_output=True, text=True,
                          cwd=tmp_path, timeout=240)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["heavy"] == []
    assert report["imported"] > 100  # the walk covered the package, not a part of it


# Clients a process loads only when it is configured with what they reach (a broker, Redis,
# an identity provider) or when it makes a connection (a webhook, a remote replica), and the
# migration tool, loaded only when a database is behind its newest revision.
ON_USE = ("aiohttp", "alembic", "aio_pika", "redis", "httpx", "joserfc",
          "inferd.guarded_resolver")

_START_PROBE = """
import json, sys
import inferd.cli
from inferd.app import create_app
from inferd.settings import load_settings
settings = load_settings(None, bundled_models=False).with_values(models=[], role="gateway")
create_app(settings)
print(json.dumps(sorted(m for m in sys.argv[1].split(",") if m in sys.modules)))
"""


def test_a_gateway_without_a_broker_redis_or_sso_loads_none_of_their_clients(
        tmp_path: Path) -> None:
    """What a process start costs is mostly imports: the command line and a gateway's app,
    built in a fresh interpreter with no broker, Redis or identity provider configured, load
    none of the clients kept for when they are used."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERD_")}  # no services
    env.update(PYTHONPATH=str(ROOT / "src"), INFERD_DATA_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", _START_PROBE, ",".join(ON_USE)], env=env,
                          capture_output=True, text=True, cwd=tmp_path, timeout=240)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
