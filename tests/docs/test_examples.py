"""Every shell and Python example of the documentation runs, against a real ``inferd serve``.

The examples are the fenced code blocks of README.md and docs/**/*.md whose info string is
``bash``, ``sh`` or ``python``. They run in order, each in a fresh shell or interpreter, against
one shared ``inferd serve`` (the bundled models, and a tiny random-weight picture pipeline
served as ``sd``, the image model the examples name), so that a reader who copies one after
``make run`` gets what it shows:

* ``localhost:8000`` and ``127.0.0.1:8000`` are rewritten to the server's port;
* a shell example runs under ``set -euo pipefail`` with ``curl`` failing on an HTTP error
  status (``--fail-with-body``): an example that answers 4xx or 5xx fails here;
* ``$ADMIN`` holds a key and ``inferd`` (the CLI) reaches the server's database through
  ``INFERD_DATA_DIR``. The server runs with ``INFERD_AUTH=off`` (on loopback), so the examples
  with and without a key run on one server; who may call what is the authorization matrix's
  test (``tests/e2e/test_authz_matrix.py``).

Blocks that need what a test cannot have here (a cluster, a GPU, model files of the reader's,
minutes of benchmark) are written ``{.bash .no-run}`` (or ``{.python .no-run}``): shown the
same, never run. README's opening block (``make run``, ``make test``) is what CI itself runs.
An info string the docs do not know (``bash no-run`` would render as text) fails the first test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import InferdProcess

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
RUN = {"bash", "sh", "python"}
NO_RUN = {"{.bash .no-run}", "{.python .no-run}"}
SHOWN = {"json", "yaml", "text", "markdown"}  # configuration, answers, logs, these docs
FENCE = re.compile(r"^\s*(`{3,})(.*)$")
ADMIN = "sk-inferd-docs-examples-admin-key"
OPENING = "make run    #"  # README's opening block: CI runs it (make test is this suite)

pytestmark = pytest.mark.slow  # the bundled model answers the quick start


@dataclass(frozen=True)
class Example:
    page: Path
    line: int
    info: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def examples() -> list[Example]:
    found: list[Example] = []
    for page in PAGES:
        lines = page.read_text().splitlines()
        start: int | None = None
        info = fence = ""
        for number, text in enumerate(lines, 1):
            match = FENCE.match(text)
            if not match:
                continue
            if start is None:
                start, fence, info = number, match.group(1), match.group(2).strip()
            elif match.group(1).startswith(fence) and not match.group(2).strip():
                found.append(Example(page, start, info, "\n".join(lines[start:number - 1])))
                start = None
        assert start is None, f"{page}: a code block opened at line {start} is never closed"
    return found


EXAMPLES = examples()
RUNNABLE = [e for e in EXAMPLES if e.info in RUN and not e.code.startswith(OPENING)]


def test_every_code_block_is_known() -> None:
    unknown = [f"{e.id}: {e.info!r}" for e in EXAMPLES if e.info not in RUN | NO_RUN | SHOWN]
    assert unknown == [], "code blocks whose info string the docs do not use"
    assert len(RUNNABLE) >= 10  # the extraction itself works: the quick start is among them
    assert any(e.page.name == "quick-start.md" for e in RUNNABLE)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory,
           tiny_pipeline: Path) -> Iterator[InferdProcess]:
    data = tmp_path_factory.mktemp("docs-examples")
    env = {"INFERD_AUTH": "off", "INFERD_ADMIN_KEY": ADMIN}
    model = f"sd={tiny_pipeline},kind=diffusers,steps=2,size=64x64"
    with InferdProcess(data / "server", "--model", model, env=env) as proc:
        yield proc


def run(example: Example, server: InferdProcess, cwd: Path) -> subprocess.CompletedProcess[str]:
    code = re.sub(r"(localhost|127\.0\.0\.1):8000", f"127.0.0.1:{server.port}", example.code)
    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}", "ADMIN": ADMIN,
           "INFERD_DATA_DIR": str(server.data_dir), "PYTHONPATH": str(ROOT / "src")}
    env.pop("INFERD_ADMIN_KEY", None)
    if example.info == "python":
        command = [sys.executable, "-c", code]
    else:
        prelude = 'curl() { command curl --fail-with-body --max-time 300 "$@"; }\n'
        command = ["bash", "-euo", "pipefail", "-c", prelude + code]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.parametrize("example", RUNNABLE, ids=[e.id for e in RUNNABLE])
def test_example_runs(example: Example, server: InferdProcess, tmp_path: Path) -> None:
    done = run(example, server, tmp_path)
    assert done.returncode == 0, (
        f"{example.id} exited {done.returncode}\n--- code\n{example.code}\n"
        f"--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}")
