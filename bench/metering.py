"""Metering under sustained load: does the usage recorder keep up, is memory flat, and what does
a ``kill -9`` lose?

    .venv/bin/python bench/metering.py [--minutes 10] [--connections 16] [--store sqlite]

``inferd gateway`` (API key with a limit, usage metering on, SQLite by default) in front of the
nginx mock, driven by ``wrk`` (POST, ``--connections`` connections: the highest rate it
sustains) for ``--minutes``. Every ``--sample`` seconds it reads ``inferd_usage_records_pending``
from ``/metrics`` and the gateway's resident memory. At the end, with the load still on, it
kills the gateway with SIGKILL, starts it again on the same data directory and counts the usage
records of the benchmark key: requests answered 200 (wrk's completed requests, less those with
an error status) against records stored. Records lost are turned into seconds of load at the
run's rate.

Targets (issue 25): pending records stay under 10,000; RSS at the end within 10% of its level
after the first minute; a kill -9 loses at most one second of records. The last line is the
summary as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import harness
import inferd_target
import upstream_mock as mock
from harness import Service, free_port

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".bench" / "metering"
CHAT = b'{"model":"mock","messages":[{"role":"user","content":"Say hello"}],"max_tokens":16}'
ADMIN = {"Authorization": f"Bearer {inferd_target.ADMIN_KEY}"}


def gauge(url: str, name: str) -> float:
    req = urllib.request.Request(url + "/metrics", headers=ADMIN)
    with urllib.request.urlopen(req, timeout=30) as resp:
        text = resp.read().decode()
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else float("nan")


def stored(inferd: inferd_target.Inferd) -> int:
    """The benchmark key's usage records in the database (the gateway flushes first)."""
    url = f"{inferd.url}/admin/v1/usage?group_by=key&key_id={inferd.key_id}"
    req = urllib.request.Request(url, headers=ADMIN)
    with urllib.request.urlopen(req, timeout=300) as resp:
        rows = json.loads(resp.read())["data"]
    return sum(int(r["requests"]) for r in rows)


def start_wrk(
    inferd: inferd_target.Inferd, connections: int, seconds: float
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "BENCH_BODY": CHAT.decode(),
        "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in inferd.headers.items()),
    }
    return subprocess.Popen(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{round(seconds)}s",
            "--timeout",
            "10s",
            "-s",
            str(harness.WRK_SCRIPT),
            inferd.url + "/v1/chat/completions",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def wrk_figures(proc: subprocess.Popen[str]) -> dict[str, int]:
    out, _ = proc.communicate(timeout=120)
    line = next(s for s in out.splitlines() if s.startswith('{"requests"'))
    data: dict[str, int] = json.loads(line)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, load before: {harness.load_average()}", flush=True)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    services: list[Service] = []
    summary: dict[str, object] = {}
    try:
        port = free_port()
        conf = mock.nginx_config(WORK / "nginx", port)
        nginx = Service(
            "nginx",
            [
                shutil.which("nginx") or "/usr/sbin/nginx",
                "-c",
                str(conf),
                "-p",
                str(WORK / "nginx"),
            ],
            port,
            WORK,
        )
        nginx.start()
        services.append(nginx)
        mock_url = f"http://127.0.0.1:{port}"
        harness.wait_ready(nginx, mock_url + "/v1/chat/completions", CHAT, {})
        inferd = inferd_target.Inferd(ROOT, WORK, mock_url, mock_url, store=args.store)
        services.append(inferd.service)
        if args.store == "postgresql":  # a gateway starts on a migrated database only
            subprocess.run(
                [str(ROOT / ".venv" / "bin" / "inferd"), "migrate"],
                check=True,
                env={**os.environ, **inferd.service.env},
                capture_output=True,
            )
        inferd.start()
        print(
            f"{inferd.describe()}; wrk {args.connections} connections for "
            f"{args.minutes:g} min, then kill -9 under load",
            flush=True,
        )
        seconds = args.minutes * 60
        wrk = start_wrk(inferd, args.connections, seconds + 5)  # still loading at the kill
        started = time.monotonic()
        samples: list[tuple[float, float, float]] = []  # (t, pending, rss MB)
        rss_minute = float("nan")
        while True:
            elapsed = time.monotonic() - started
            if elapsed >= seconds:
                break
            time.sleep(min(args.sample, seconds - elapsed))
            elapsed = time.monotonic() - started
            pending = gauge(inferd.url, "inferd_usage_records_pending")
            rss = inferd.service.rss_mb()
            samples.append((elapsed, pending, rss))
            if elapsed >= 60 and rss_minute != rss_minute:
                rss_minute = rss
            print(
                f"  {elapsed:6.0f} s  pending {pending:9,.0f}  RSS {rss:6.1f} MB  "
                f"(load {harness.load_average()})",
                flush=True,
            )
        dropped = gauge(inferd.url, "inferd_usage_records_dropped")
        rss_end = inferd.service.rss_mb()
        assert inferd.service.proc is not None
        os.kill(inferd.service.proc.pid, signal.SIGKILL)
        inferd.service.proc.wait(10)
        killed_at = time.monotonic() - started
        figures = wrk_figures(wrk)
        answered = figures["requests"] - figures["status"]
        rate = answered / killed_at
        print(
            f"killed at {killed_at:.1f} s: {answered:,} requests answered 200 "
            f"({rate:,.0f}/s; wrk errors after the kill: connect {figures['connect']}, "
            f"read {figures['read']})",
            flush=True,
        )
        inferd.service.start()  # the same data directory, the same database
        harness.wait_ready(inferd.service, inferd.url + "/v1/chat/completions", CHAT, ADMIN)
        records = stored(inferd)
        replayed = gauge(inferd.url, "inferd_usage_records_replayed")
        lost = answered - records
        if rss_minute != rss_minute:  # a run shorter than a minute: its first sample
            rss_minute = samples[0][2] if samples else rss_end
        max_pending = max((p for _, p, _ in samples), default=float("nan"))
        summary = {
            "store": args.store,
            "minutes": args.minutes,
            "connections": args.connections,
            "requests_per_second": round(rate),
            "answered_200": answered,
            "records_after_restart": records,
            "replayed_at_restart": replayed,
            "lost": lost,
            "lost_seconds": round(lost / rate, 3) if rate else None,
            "max_pending": max_pending,
            "dropped": dropped,
            "rss_after_minute_1_mb": round(rss_minute, 1),
            "rss_end_mb": round(rss_end, 1),
            "rss_ratio": round(rss_end / rss_minute, 3),
        }
        print(f"\npending records: max {max_pending:,.0f} (dropped {dropped:,.0f})")
        print(
            f"RSS: {rss_minute:.1f} MB after the first minute, {rss_end:.1f} MB at the end "
            f"({rss_end / rss_minute:.3f}x)"
        )
        print(
            f"kill -9: {answered:,} answered 200, {records:,} records after the restart "
            f"({replayed:,.0f} of them replayed from the spool): {lost:,} lost "
            f"= {lost / rate:.3f} s of load"
            + (" (negative: records of requests cut off in flight)" if lost < 0 else "")
        )
        checks = [
            ("pending records < 10,000", max_pending < 10_000),
            (
                "RSS within 10% of its level after the first minute",
                abs(rss_end / rss_minute - 1) <= 0.10,
            ),
            ("kill -9 loses at most 1 s of records", lost <= rate),
        ]
        print("targets:")
        for name, ok in checks:
            print(f"  [{'met' if ok else 'NOT met'}] {name}")
        print(f"load after: {harness.load_average()}")
    finally:
        for s in reversed(services):
            try:
                s.stop()
            except Exception as exc:  # keep stopping the others
                print(f"stopping {s.name}: {exc}", file=sys.stderr)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
