"""inferd as the benchmark runs it: one gateway process, no bundled models, three ``http``
replicas on the mocks, API-key auth with a limit, usage metering on."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

import harness
from harness import Service, free_port

ADMIN_KEY = "inferd-bench-admin-7Yq2Lm9Xc4Tv8Rb1"
# Seconds to let batched usage records reach the database before counting them.
FLUSH_WAIT = 3.0
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
POSTGRES_DB = "inferd_bench"


def fresh_postgres() -> str:
    """Drop and create the benchmark's own PostgreSQL database; return its URL."""
    import asyncpg  # inferd's dependency; the benchmark runs in inferd's venv

    async def recreate() -> None:
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{POSTGRES_DB}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{POSTGRES_DB}"')
        finally:
            await conn.close()

    asyncio.run(recreate())
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + POSTGRES_DB


class Inferd:
    """Starts inferd, gives the benchmark a user key with a limit, checks usage at the end."""

    def __init__(self, root: Path, work: Path, mock_url: str, paced_url: str,
                 store: str = "sqlite") -> None:
        self.root, self.work = root, work
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.mock_port = int(mock_url.rsplit(":", 1)[1])
        self.paced_port = int(paced_url.rsplit(":", 1)[1])
        self.store = store
        self.headers: dict[str, str] = {}
        self.requests_sent = 0
        # requests wrk may have left in flight when it stopped: recorded but not counted by it
        self.cut_off = 0
        self.key_id: str | None = None
        data = work / "inferd-data"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        config = work / "inferd.yaml"
        models = [("mock", mock_url + "/v1"), ("mock-sse", mock_url + "/sse/v1"),
                  ("mock-paced", paced_url + "/v1")]
        config.write_text(json.dumps({"remote_models": [
            {"name": name, "replicas": [{"kind": "http", "url": url, "upstream_model": "mock"}]}
            for name, url in models]}))
        env = {"INFERD_ADMIN_KEY": ADMIN_KEY, "INFERD_AUTH": "on", "INFERD_DATA_DIR": str(data),
               "INFERD_BUNDLED_MODELS": "false", "INFERD_LOG_LEVEL": "warning"}
        env["INFERD_DATABASE_URL"] = fresh_postgres() if store == "postgresql" else ""
        role = "gateway" if self._has_gateway_command() else "serve"
        cmd = [str(root / ".venv" / "bin" / "inferd"), role, "--config", str(config),
               "--port", str(self.port)]
        if role == "serve":
            cmd.append("--no-bundled")
        self.role = role
        self.service = Service("inferd", cmd, self.port, work, env=env)

    def _has_gateway_command(self) -> bool:
        out = subprocess.run([str(self.root / ".venv" / "bin" / "inferd"), "--help"],
                             capture_output=True, text=True).stdout
        return any(line.split()[:1] == ["gateway"] for line in out.splitlines())

    def describe(self) -> str:
        auth = "API key with an rpm limit" if self.headers else "no keys (not available yet)"
        return f"`inferd {self.role}`, store {self.store}, {auth}"

    def start(self) -> None:
        self.service.start()
        body = b'{"model":"mock","messages":[{"role":"user","content":"hi"}]}'
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        harness.wait_ready(self.service, self.url + "/v1/chat/completions", body, admin)
        key = self._create_key(admin)
        if key:
            self.headers = {"Authorization": f"Bearer {key}"}

    def _create_key(self, admin: dict[str, str]) -> str | None:
        """A user key limited to the mock models, with a (high) requests/min limit."""
        spec = {"name": "bench", "scope": "user", "rpm": 100_000_000,
                "models": ["mock", "mock-sse", "mock-paced"]}
        status, data = harness.post(self.url + "/admin/v1/keys",
                                    json.dumps(spec).encode(), admin)
        if status == 404:
            return None
        if status not in (200, 201):
            raise RuntimeError(f"creating the benchmark key failed: {status} {data[:300]!r}")
        created = json.loads(data)
        self.key_id = str(created["id"])
        return str(created["key"])

    def note_requests(self, count: int, in_flight: int = 0) -> None:
        """``count`` requests completed by a client; up to ``in_flight`` more were cut off."""
        self.requests_sent += count
        self.cut_off += in_flight

    def check_usage(self) -> bool:
        """Every request of the benchmark key must have its usage record in the database."""
        if self.key_id is None:
            print("usage: no benchmark key (keys not available), not checked")
            return False
        url = f"{self.url}/admin/v1/usage?group_by=key&key_id={self.key_id}"
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            rows = json.loads(resp.read())["data"]
        recorded = sum(int(r["requests"]) for r in rows)
        errors = sum(int(r.get("errors") or 0) for r in rows)
        low, high = self.requests_sent, self.requests_sent + self.cut_off
        ok = low <= recorded <= high
        print(f"usage records in the database for the benchmark key: {recorded:,} "
              f"({errors:,} with an error status); clients completed {low:,} requests and "
              f"cut off at most {self.cut_off:,} in flight when wrk stopped: "
              f"{'OK, none dropped' if ok else 'MISMATCH'}")
        return ok
