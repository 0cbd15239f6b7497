"""Schemathesis against inferd's own ``/openapi.json``: what ``tests/e2e/test_fuzz.py`` runs
with a few examples per operation and ``bench/fuzz.py`` with many.

Every operation of the document is called with generated requests, valid ones (positive) and
invalid ones (negative), once with an admin key and once with a user key. A 5xx is a failure,
and so is an answer the document does not describe: an undocumented status, a content type
not listed for it, or a JSON body that does not match its schema.

The operations that could lock the fuzzer out or change what the others test (deleting or
disabling keys, unloading models, changing or adding models and replicas, the model-host's
current model) run against their own server: ``DESTRUCTIVE``.

No generated request makes inferd reach beyond this machine: the servers accept replicas on
loopback only, and every URL in a generated body is pointed at a closed loopback port first.
"""

from __future__ import annotations

import itertools
import json
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import InferdProcess

ADMIN_KEY = "sk-fuzz-admin-0123456789abcdef"
MODELS = json.dumps([{"name": "echo", "kind": "echo"}, {"name": "echo2", "kind": "echo"}])
ENV = {"INFERD_MODELS": MODELS, "INFERD_ADMIN_KEY": ADMIN_KEY,
       "INFERD_KEY_REFRESH_SECONDS": "0.5",
       "INFERD_REPLICA_ALLOWED_HOSTS": json.dumps(["127.0.0.0/8"]),
       "INFERD_JOB_WEBHOOK_ATTEMPTS": "1", "INFERD_JOB_WEBHOOK_TIMEOUT_SECONDS": "1",
       # the fuzzer checks that each operation refuses missing and wrong keys (the document
       # declares its security schemes): those failures must not throttle the keys it uses
       # after them (the throttle has tests of its own: tests/unit/auth/test_throttle.py)
       "INFERD_AUTH_FAILURE_LIMIT": "0"}
CLOSED = "http://127.0.0.1:9/"  # the discard port: nothing listens there

DESTRUCTIVE = frozenset({
    ("patch", "/admin/v1/keys/{key_id}"), ("post", "/admin/v1/keys/{key_id}/disable"),
    ("delete", "/admin/v1/keys/{key_id}"), ("post", "/delete_api_key"),
    ("post", "/admin/v1/engines/{model}/load"), ("post", "/admin/v1/engines/{model}/unload"),
    ("post", "/admin/v1/models"), ("patch", "/admin/v1/models/{model}"),
    ("delete", "/admin/v1/models/{model}"), ("post", "/models"), ("delete", "/models/{model_id}"),
    ("post", "/admin/v1/replicas"), ("patch", "/admin/v1/replicas/{replica_id}"),
    ("delete", "/admin/v1/replicas/{replica_id}"), ("post", "/models/{model_id}/replicas"),
    ("put", "/models/replicas/{replica_id}"), ("delete", "/replicas/{replica_id}"),
    ("post", "/old/initialize"),
})


@dataclass(frozen=True)
class Target:
    """A server to fuzz and the user key made on it (the admin key is ``ADMIN_KEY``)."""

    url: str
    user_key: str


@dataclass
class Tally:
    """What a run did and found."""

    operations: set[str] = field(default_factory=set)
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    schema_failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, other: Tally) -> None:
        self.operations |= other.operations
        self.requests += other.requests
        self.statuses.update(other.statuses)
        self.server_errors += other.server_errors
        self.schema_failures += other.schema_failures
        self.seconds += other.seconds

    def summary(self) -> str:
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        return (f"operations fuzzed: {len(self.operations)}\nrequests sent: {self.requests}\n"
                f"5xx found: {len(self.server_errors)}\n"
                f"schema failures: {len(self.schema_failures)}\nstatuses: {statuses}\n"
                f"seconds: {self.seconds:.1f}")


def _loopback_only(value: Any) -> Any:
    """``value`` with every URL in it pointed at ``CLOSED`` unless it is on loopback."""
    if isinstance(value, dict):
        return {k: _loopback_only(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_loopback_only(v) for v in value]
    if isinstance(value, str) and "://" in value:
        try:
            host = urllib.parse.urlsplit(value).hostname
        except ValueError:
            return CLOSED
        return value if host in ("127.0.0.1", "localhost") else CLOSED
    return value


def server(data_dir: Path) -> InferdProcess:
    """An ``inferd serve`` for the fuzzer: echo models only, loopback replicas only."""
    return InferdProcess(data_dir, "--no-bundled", env=ENV)


def user_key(url: str) -> str:
    response = httpx.post(url + "/admin/v1/keys", json={"name": "fuzz user"},
                          headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    response.raise_for_status()
    key: str = response.json()["key"]
    return key


@contextmanager
def servers(root: Path) -> Iterator[tuple[Target, Target]]:
    """The main server and the destructive operations' own, each with a user key."""
    with ExitStack() as stack:
        main = stack.enter_context(server(root / "main"))
        other = stack.enter_context(server(root / "destructive"))
        yield Target(main.url, user_key(main.url)), Target(other.url, user_key(other.url))


def known_objects(url: str, key: str) -> dict[str, list[Any]]:
    """Real objects of ``key`` on the server, by the path parameter that names them: the
    fuzzer calls each operation on these too, so its success answers are checked as well as
    its 404s."""
    chat = {"model": "echo", "messages": [{"role": "user", "content": "fuzz me"}]}
    line = json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                       "body": chat})
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"},
                      timeout=60) as client:

        def post(path: str, **kwargs: Any) -> dict[str, Any]:
            response = client.post(path, **kwargs)
            assert response.status_code < 300, (path, response.text)
            answer: dict[str, Any] = response.json()
            return answer

        job = post("/v1/jobs", json={"endpoint": "/v1/chat/completions", "body": chat})
        upload = post("/v1/files", files={"file": ("in.jsonl", line.encode())},
                      data={"purpose": "batch"})
        batch = post("/v1/batches", json={"input_file_id": upload["id"],
                                          "endpoint": "/v1/chat/completions"})
        stored = post("/v1/responses", json={"model": "echo", "input": "fuzz me"})
        context = post("/contexts/", json={"content": "fuzz me"})
        result = post(f"/models/send/echo/{context['id']}")
        admin = httpx.get(url + "/admin/v1/models",
                          headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()["data"]
        keys = httpx.get(url + "/admin/v1/keys",
                         headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()["data"]
    return {"job_id": [job["id"]], "file_id": [upload["id"]], "batch_id": [batch["id"]],
            "response_id": [stored["id"]], "context_id": [context["id"]],
            "result_id": [result["id"]], "model_name": ["echo"], "model": ["echo"],
            "model_id": ["echo", *(m["id"] for m in admin if m["name"] == "echo")],
            "name": ["echo", "jobs"], "replica_id": ["local:echo"],
            "key_id": [k["id"] for k in keys if k["name"] == "fuzz user"]}


def _negatable(operation: dict[str, Any]) -> bool:
    """Whether an invalid request can be made: a body, or a parameter that is not just any
    string (any string is a valid path segment or header; hypothesis would search in vain)."""
    if "requestBody" in operation:
        return True
    for parameter in operation.get("parameters", []):
        schema = {k: v for k, v in parameter.get("schema", {}).items()
                  if k not in ("title", "description")}
        if schema != {"type": "string"}:
            return True
    return False


def _operations(schema: Any) -> Iterable[Any]:
    for result in schema.get_all_operations():
        yield result.ok()


def fuzz(url: str, keys: list[str], *, examples: int, destructive: bool,
         seed: int | None = 0, progress: Callable[[str], None] | None = None,
         document: dict[str, Any] | None = None) -> Tally:
    """Run every operation of ``url``'s document (the ``DESTRUCTIVE`` ones, or all the others)
    with each key in turn; ``seed=None`` draws new examples every run. ``document`` replaces
    the server's own (to check that the checks catch what they should)."""
    import requests
    import schemathesis

    if document is None:
        document = httpx.get(url + "/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document)
    tally = Tally()
    started = time.monotonic()
    known = {key: known_objects(url, key) for key in keys}
    with requests.Session() as session:
        for operation in _operations(schema):
            if ((operation.method.lower(), operation.path) in DESTRUCTIVE) != destructive:
                continue
            tally.operations.add(f"{operation.method.upper()} {operation.path}")
            began, sent = time.monotonic(), tally.requests
            if progress is not None:
                progress(f"{operation.label} ...")
            definition = document["paths"][operation.path][operation.method.lower()]
            modes = [schemathesis.GenerationMode.POSITIVE]
            if _negatable(definition):
                modes.append(schemathesis.GenerationMode.NEGATIVE)
            named = [p["name"] for p in definition.get("parameters", []) if p["in"] == "path"]
            for key in keys:
                runner = _Runner(url, session, {"Authorization": f"Bearer {key}"}, tally)
                for mode in modes:
                    runner.run(operation, mode, examples, seed)
                if named and all(name in known[key] for name in named):
                    for values in itertools.product(*(known[key][n] for n in named)):
                        runner.run(operation, schemathesis.GenerationMode.POSITIVE, examples,
                                   seed, dict(zip(named, values, strict=True)))
            if progress is not None:
                progress(f"{operation.label}: {tally.requests - sent} requests in "
                         f"{time.monotonic() - began:.1f} s")
    tally.seconds = time.monotonic() - started
    return tally


@dataclass
class _Runner:
    """Calls one operation with generated cases and tallies what comes back."""

    url: str
    session: Any
    headers: dict[str, str]
    tally: Tally

    def run(self, operation: Any, mode: Any, examples: int, seed: int | None,
            path_parameters: dict[str, Any] | None = None) -> None:
        from hypothesis import HealthCheck, Phase, Verbosity, given, settings
        from hypothesis.errors import Unsatisfiable

        @settings(max_examples=examples, deadline=None, database=None,
                  derandomize=seed is not None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet)
        @given(case=operation.as_strategy(generation_mode=mode,
                                          path_parameters=path_parameters))
        def call(case: Any) -> None:
            self.call(case)

        try:
            call()
        except Unsatisfiable:
            if mode.is_positive:
                raise
            # an operation with no parameter and no body has no invalid request to make

    def call(self, case: Any) -> None:
        from schemathesis.checks import not_a_server_error
        from schemathesis.core.failures import FailureGroup
        from schemathesis.specs.openapi.checks import (
            content_type_conformance,
            response_schema_conformance,
            status_code_conformance,
        )

        if isinstance(case.body, dict | list):
            case.body = _loopback_only(case.body)
        response = case.call(base_url=self.url, session=self.session, headers=self.headers,
                             timeout=120)
        self.tally.requests += 1
        self.tally.statuses[response.status_code] += 1
        checks = [not_a_server_error, status_code_conformance, content_type_conformance,
                  response_schema_conformance]
        try:
            case.validate_response(response, checks=checks, headers=self.headers)
        except FailureGroup as group:
            for failure in group.exceptions:
                line = (f"{case.operation.label} -> {response.status_code}: {failure.title}: "
                        f"{failure.message[:300]}\n  "
                        f"{case.as_curl_command(headers=self.headers)}")
                if response.status_code >= 500:
                    self.tally.server_errors.append(line)
                else:
                    self.tally.schema_failures.append(line)
