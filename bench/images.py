"""Seconds per image: the diffusers pipeline called directly, against the same pipeline served
by ``inferd serve`` (``POST /v1/images/generations``), and the job path
(``POST /v1/jobs`` followed to its end over ``/v1/jobs/{id}/events``) against the sync path.

The pipeline is the tiny random-weight Stable Diffusion of ``inferd images tiny-pipeline``
(no weights can be downloaded here), at 64x64 and 256x256. The three ways run interleaved,
one image each in turn with the same seeds, so that the machine's noise hits them alike, and
each draws in a process of its own (the direct pipeline in a child process of this script),
with a pause between calls: PyTorch's OpenMP threads keep spinning for a while after a call
and would take the CPU from the way that runs next. The direct call includes encoding the
PNG, as inferd must; inferd adds the HTTP round trip, base64 and JSON, limits, routing and
metering (and for jobs: the job row, queue and step events).

    .venv/bin/python bench/images.py [--images 15] [--steps 20]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing import Pipe, Process
from multiprocessing.connection import Connection
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from inferd.engines.diffusers import encode  # noqa: E402
from inferd.engines.diffusion_tiny import build_tiny_pipeline  # noqa: E402

SIZES = ("64x64", "256x256")
SETTLE_SECONDS = 0.5  # idle time before each measured call (see the docstring)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_inferd(data_dir: Path, pipeline: Path, steps: int) -> tuple[subprocess.Popen[bytes],
                                                                       str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "inferd", "serve", "--port", str(port), "--data-dir",
         str(data_dir), "--log-level", "warning", "--no-bundled", "--model",
         f"tiny-sd={pipeline},kind=diffusers,steps={steps}"],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "INFERD_AUTH": "off",
             "INFERD_JOB_EVENT_FLUSH_SECONDS": "0.1"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("inferd did not start")


def direct_process(folder: str, steps: int, conn: Connection) -> None:
    """The pipeline called directly, in a child process: ``(size, seed)`` in, PNG out."""
    import torch
    from diffusers import AutoPipelineForText2Image

    pipeline = AutoPipelineForText2Image.from_pretrained(folder)
    pipeline.set_progress_bar_config(disable=True)
    conn.send(b"ready")
    while (job := conn.recv()) is not None:
        size, seed = job
        width, height = (int(v) for v in size.split("x"))
        generator = torch.Generator(device="cpu").manual_seed(seed)
        with torch.inference_mode():
            image = pipeline(prompt="a lighthouse at dusk", width=width, height=height,
                             num_inference_steps=steps, guidance_scale=7.5,
                             generator=generator).images[0]
        conn.send(encode(image, "png", 90))


def direct(conn: Connection) -> Callable[[str, int], bytes]:
    def draw(size: str, seed: int) -> bytes:
        conn.send((size, seed))
        picture: bytes = conn.recv()
        return picture

    return draw


def sync_path(http: httpx.Client) -> Callable[[str, int], bytes]:
    def draw(size: str, seed: int) -> bytes:
        response = http.post("/v1/images/generations", json={
            "model": "tiny-sd", "prompt": "a lighthouse at dusk", "size": size, "seed": seed})
        response.raise_for_status()
        return base64.b64decode(response.json()["data"][0]["b64_json"])

    return draw


def job_path(http: httpx.Client) -> Callable[[str, int], bytes]:
    def draw(size: str, seed: int) -> bytes:
        job = http.post("/v1/jobs", json={"endpoint": "/v1/images/generations", "body": {
            "model": "tiny-sd", "prompt": "a lighthouse at dusk", "size": size,
            "seed": seed}}).json()
        kind = ""
        with http.stream("GET", f"/v1/jobs/{job['id']}/events") as stream:
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind in {"completed", "failed"}:
                    done = json.loads(line[6:])
                    return base64.b64decode(done["result"]["data"][0]["b64_json"])
        raise RuntimeError(f"job {job['id']} ended without a result")

    return draw


def measure(ways: dict[str, Callable[[str, int], bytes]], size: str,
            images: int) -> dict[str, list[float]]:
    """Seconds per image of each way, interleaved; checks they draw the same picture."""
    times: dict[str, list[float]] = {name: [] for name in ways}
    for way in ways.values():  # warm-up (first call allocates)
        way(size, 0)
    for seed in range(1, images + 1):
        pictures = set()
        for name, way in ways.items():
            time.sleep(SETTLE_SECONDS)
            started = time.perf_counter()
            pictures.add(way(size, seed))
            times[name].append(time.perf_counter() - started)
        if len(pictures) != 1:
            raise RuntimeError(f"the ways drew different pictures for seed {seed}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=15, help="images per size and way")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps per image")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny_pipeline(Path(tmp) / "pipeline")
        ours, theirs = Pipe()
        child = Process(target=direct_process, args=(str(folder), args.steps, theirs))
        child.start()
        if ours.recv() != b"ready":
            raise RuntimeError("the direct pipeline did not load")
        proc, url = start_inferd(Path(tmp) / "data", folder, args.steps)
        try:
            with httpx.Client(base_url=url, timeout=600) as http:
                ways = {"direct": direct(ours), "sync": sync_path(http),
                        "job": job_path(http)}
                print(f"tiny Stable Diffusion, {args.steps} steps, {args.images} images per "
                      f"size and way, cpus={os.cpu_count()}, load {os.getloadavg()[0]:.1f}")
                print(f"{'size':>9} {'stat':>6} {'direct':>8} {'inferd':>8} {'job':>8} "
                      f"{'inferd/direct':>14} {'job/sync':>9}")
                for size in SIZES:
                    times = measure(ways, size, args.images)
                    for stat, pick in (("min", min), ("median", statistics.median)):
                        s = {name: pick(values) for name, values in times.items()}
                        print(f"{size:>9} {stat:>6} {s['direct']:>8.4f} {s['sync']:>8.4f} "
                              f"{s['job']:>8.4f} {s['sync'] / s['direct']:>14.3f} "
                              f"{s['job'] / s['sync']:>9.3f}")
        finally:
            ours.send(None)
            child.join(30)
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


if __name__ == "__main__":
    main()
