"""What a ``previous_response_id`` chain stores: ``--steps`` responses (60 by default), each
continuing the one before with ``--kb`` KiB of new input (20: 1.2 MB sent in all), on
``inferd serve`` with the echo engine and SQLite. Prints the bytes sent, the bytes the
``responses`` rows hold (their JSON documents: history, input items, Response object) and the
database file's size, and the time of the first and last steps.

    .venv/bin/python -m bench.responses_chain [--steps 60] [--kb 20]
    .venv/bin/python -m bench.responses_chain --src /path/to/other/checkout/src   # compare
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path

import httpx

from bench.harness import ROOT, start_inferd, stop

ECHO = json.dumps([{"name": "echo", "kind": "echo"}])


def stored(db: Path) -> tuple[int, int]:
    """(rows, bytes of their JSON documents) in the ``responses`` table."""
    with sqlite3.connect(db) as conn:
        rows, size = conn.execute(
            "SELECT COUNT(*), SUM(COALESCE(LENGTH(CAST(history AS BLOB)), 0)"
            " + LENGTH(CAST(input_items AS BLOB)) + COALESCE(LENGTH(CAST(response AS BLOB)), 0))"
            " FROM responses").fetchone()
    return int(rows), int(size or 0)


def main(steps: int, kb: int, src: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_inferd(Path(tmp), ["--no-bundled"], {
            "INFERD_MODELS": ECHO, "INFERD_AUTH": "off", "PYTHONPATH": str(src)})
        sent, times, previous = 0, [], None
        try:
            with httpx.Client(base_url=url, timeout=600) as http:
                for step in range(steps):
                    words = " ".join(f"s{step}w{i}" for i in range(kb * 1024 // 8))
                    text = (words + " " * (kb * 1024))[:kb * 1024]
                    body = {"model": "echo", "input": text, "max_output_tokens": 16,
                            **({"previous_response_id": previous} if previous else {})}
                    payload = json.dumps(body).encode()
                    started = time.perf_counter()
                    response = http.post("/v1/responses", content=payload,
                                         headers={"Content-Type": "application/json"})
                    times.append(time.perf_counter() - started)
                    response.raise_for_status()
                    previous = response.json()["id"]
                    sent += len(payload)
        finally:
            stop(proc)
        db = Path(tmp) / "inferd.db"
        rows, size = stored(db)
        file_size = db.stat().st_size
    print(f"{steps} chained responses of {kb} KiB input each, echo engine, SQLite, src {src}")
    print(f"sent               {sent / 1e6:8.2f} MB")
    print(f"stored (JSON)      {size / 1e6:8.2f} MB in {rows} rows ({size / sent:.1f}x sent)")
    print(f"database file      {file_size / 1e6:8.2f} MB")
    print(f"first step         {times[0] * 1000:8.1f} ms")
    print(f"last step          {times[-1] * 1000:8.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--kb", type=int, default=20)
    parser.add_argument("--src", type=Path, default=ROOT / "src",
                        help="the inferd source tree to run (default: this checkout's)")
    options = parser.parse_args()
    main(options.steps, options.kb, options.src)
