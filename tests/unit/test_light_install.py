"""The base install: a model whose runtime (an extra of inferd) is missing is refused with the
extra to install (that the roles hosting no model import no machine-learning runtime is
checked in a fresh interpreter: tests/integration/test_light_install.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from inferd.cli import main
from inferd.engines import build_engine
from inferd.errors import EngineNotInstalled, InvalidRequest
from inferd.settings import ModelSpec


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
