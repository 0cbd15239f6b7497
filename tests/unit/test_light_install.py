"""The base install: the roles that host no model import no machine-learning runtime, and a
model whose runtime (an extra of inferd) is missing is refused with the extra to install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from inferd.cli import main
from inferd.engines import build_engine
from inferd.errors import EngineNotInstalled, InvalidRequest
from inferd.settings import ModelSpec

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
    settings = load_settings(None, bundled_models=False).model_copy(
        update={"models": [], "role": role})
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


@pytest.mark.parametrize(("kind", "module", "package", "extra"), [
    ("llamacpp", "llama_cpp", "llama-cpp-python", "llamacpp"),
    ("embeddings", "torch", "torch", "embeddings"),
    ("embeddings", "transformers", "transformers", "embeddings"),
    ("diffusers", "diffusers", "diffusers", "images"),
    ("diffusers", "torch", "torch", "images"),
])
def test_a_model_whose_runtime_is_missing_names_the_extra(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        kind: str, module: str, package: str, extra: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails: not installed
    spec = ModelSpec(name="m1", kind=kind, path=str(tmp_path))  # type: ignore[arg-type]
    with pytest.raises(EngineNotInstalled) as caught:
        build_engine(spec)
    error = caught.value
    assert isinstance(error, InvalidRequest) and error.status == 400
    assert error.to_dict() == {
        "message": f"the model 'm1' needs {package}: pip install 'inferd[{extra}]'",
        "type": "invalid_request_error", "param": "model", "code": "engine_not_installed"}


def test_echo_models_need_no_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("llama_cpp", "torch", "transformers", "diffusers"):
        monkeypatch.setitem(sys.modules, module, None)
    engine = build_engine(ModelSpec(name="e", kind="echo"))
    assert type(engine).__name__ == "EchoEngine"


@pytest.mark.parametrize(("model", "message"), [
    ("tiny={gguf}", "the model 'tiny' needs llama-cpp-python: pip install 'inferd[llamacpp]'"),
    ("vec={gguf},kind=embeddings",
     "the model 'vec' needs torch: pip install 'inferd[embeddings]'"),
])
def test_serve_refuses_at_start_with_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                              model: str, message: str) -> None:
    for module in ("llama_cpp", "torch"):
        monkeypatch.setitem(sys.modules, module, None)
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    result = CliRunner().invoke(main, [
        "serve", "--no-bundled", "--data-dir", str(tmp_path / "data"),
        "--model", model.format(gguf=gguf)])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {message}"
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_the_tiny_pipeline_command_names_the_images_extra(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "diffusers", None)
    result = CliRunner().invoke(main, ["images", "tiny-pipeline", str(tmp_path / "pipe")])
    assert result.exit_code == 1
    assert result.output.strip() == \
        "Error: the model 'tiny-sd' needs diffusers: pip install 'inferd[images]'"
    assert not (tmp_path / "pipe").exists()


def test_llama_cpp_has_a_cpu_backend_before_a_model_loads() -> None:
    """The engine asks ggml for its backends first (a portable build links none); with this
    venv's build the CPU backend is linked in and the call leaves it registered."""
    pytest.importorskip("llama_cpp")
    from inferd.engines.llamacpp.backends import backend_dir, load_backends

    assert load_backends() >= 1
    assert load_backends() >= 1  # asking again loads nothing twice
    assert any(backend_dir().glob("libggml*.so"))
