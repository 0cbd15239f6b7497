"""The base install's footprint: `pip install inferd` (no extra) into a fresh venv.

Prints the venv's size (all of it, and without the pip and setuptools every venv carries), the
install's time with pip's cache warm (run it twice: the first run may fill the cache), and the
resident memory of an idle `inferd gateway` on PostgreSQL, RabbitMQ and Redis (this machine's
services), after it answered /ready and sat idle for ``--idle`` seconds.

    .venv/bin/python bench/footprint.py [--idle 10] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import _pg_exec  # noqa: E402
from tests.helpers import free_port  # noqa: E402

VENV_TOOLS = ("pip", "setuptools", "pkg_resources", "_distutils_hack")


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def disk_bytes(path: Path) -> int:
    """What ``du`` counts: the blocks the files take."""
    return sum(f.lstat().st_blocks * 512 for f in path.rglob("*"))


def install(dest: Path) -> tuple[Path, float]:
    project = dest / "project"
    project.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, project / name)
    shutil.copytree(ROOT / "src", project / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    venv = dest / "venv"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-c",
                    str(ROOT / "constraints.txt"), str(project)], check=True)
    return venv, time.perf_counter() - start


def idle_rss(venv: Path, idle: float, data_dir: Path) -> int:
    """VmRSS (bytes) of `inferd gateway` from ``venv`` after /ready and ``idle`` seconds."""
    database = f"inferd_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_exec(f'CREATE DATABASE "{database}"'))
    prefix = f"footprint-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": "",
           "INFERD_DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{database}",
           "INFERD_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672/",
           "INFERD_BROKER_PREFIX": prefix, "INFERD_REDIS_URL": "redis://127.0.0.1:6379/0",
           "INFERD_REDIS_PREFIX": prefix}
    python = str(venv / "bin" / "python")
    try:
        subprocess.run([python, "-m", "inferd", "migrate"], env=env, check=True,
                       capture_output=True, cwd=data_dir)
        port = free_port()
        proc = subprocess.Popen([python, "-m", "inferd", "gateway", "--port", str(port),
                                 "--data-dir", str(data_dir)], env=env, cwd=data_dir,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("inferd gateway did not become ready")
                time.sleep(0.2)
            time.sleep(idle)
            status = Path(f"/proc/{proc.pid}/status").read_text()
            kib = next(int(line.split()[1]) for line in status.splitlines()
                       if line.startswith("VmRSS:"))
            return kib * 1024
        finally:
            proc.terminate()
            proc.wait(30)
    finally:
        asyncio.run(_pg_exec(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--idle", type=float, default=10.0, help="seconds idle before reading")
    parser.add_argument("--keep", type=Path, default=None, help="build the venv here and keep it")
    args = parser.parse_args()
    dest = args.keep or Path(tempfile.mkdtemp(prefix="inferd-footprint-"))
    try:
        venv, seconds = install(dest)
        site = next((venv / "lib").glob("python3*/site-packages"))
        total = tree_bytes(venv)
        tools = sum(tree_bytes(site / name) for name in VENV_TOOLS if (site / name).exists())
        tools += sum(tree_bytes(d) for name in VENV_TOOLS
                     for d in site.glob(f"{name}-*.dist-info"))
        packages = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list",
                                   "--format", "freeze"], capture_output=True, text=True,
                                  check=True).stdout.split()
        data_dir = dest / "data"
        data_dir.mkdir()
        rss = idle_rss(venv, args.idle, data_dir)
        mib = 1024 * 1024
        print(f"base venv: {total / mib:.0f} MiB of files ({disk_bytes(venv) / mib:.0f} MiB on "
              f"disk, as du counts; {(total - tools) / mib:.0f} MiB without the pip and "
              f"setuptools every venv has), {len(packages)} distributions")
        print(f"install time (warm pip cache, venv creation included): {seconds:.1f} s")
        print(f"inferd gateway resident memory at idle: {rss / mib:.0f} MiB")
    finally:
        if args.keep is None:
            shutil.rmtree(dest, ignore_errors=True)


if __name__ == "__main__":
    main()
