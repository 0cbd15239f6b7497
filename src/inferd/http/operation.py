"""One declaration per operation: ``@endpoint(...)`` registers the route and records it.

Each route of the app is declared once, next to its code::

    @endpoint(router, "POST", "/v1/embeddings", access="key", body=EmbeddingRequest,
              answer=a.EmbeddingList, errors=(*INFER, 409, 413), job=True)
    async def create_embeddings(...): ...

The decorator adds the route to ``router`` (the framework's routing) and records an
``Operation`` in a ``Registry`` (``REGISTRY`` unless told otherwise). Everything else that
needs to know the routes is derived from the registry: who may call each one (the access
policy, ``inferd.http.access``: the auth middleware's public paths and the docs' authorization
table) and what each takes and answers (the OpenAPI document, ``inferd.http.openapi``).

Most routes read their bodies themselves (to answer errors in the OpenAI shape, and fast) and
build their answers as plain dicts, so the framework cannot see either: the declaration tells
the request body model, the success status with its answer model or media types, and the error
statuses the route can send besides the ones every route shares.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.routing import compile_path

from inferd.jobs.requests import ENDPOINTS

Access = Literal["public", "key", "owner", "private", "audit", "admin", "engine", "scim"]
Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]

LEVELS: dict[Access, str] = {
    "public": "no key needed",
    "key": "any valid key (user or admin); a user key only reaches the models of its "
           "allow-list. An auditor key calls only the reads (`GET`) of this level and the "
           "`owner` and `private` ones; on the others it gets 403 `auditor_read_only`",
    "owner": "any valid key, on its own objects; an admin key on every key's objects. Another "
             "key's object is a 404 (never a 403, which would confirm the id exists); lists "
             "hold the caller's own objects (an admin's: everyone's)",
    "private": "any valid key, on its own objects only: admin keys too get 404 for another "
               "key's",
    "audit": "admin and auditor keys: the reads of the control plane (an auditor key reads "
             "everything an admin key reads and changes nothing); a user key gets 403 "
             "`admin_scope_required`",
    "admin": "admin keys only: the changes of the control plane, each recorded in the audit "
             "log; a user or auditor key gets 403 `admin_scope_required`",
    "engine": "the engines' key (`INFERD_ENGINE_API_KEY`) or an admin key; a user key gets 403 "
              "`engine_scope_required`. The engines' key gets 403 `engine_key_not_allowed` "
              "on every other route",
    "scim": "SCIM provisioning keys (scope `scim`, held by an identity provider) and admin "
            "keys; every change recorded in the audit log. Another key gets 403 "
            "`scim_scope_required`; a `scim` key gets 403 `scim_key_not_allowed` on every "
            "other route. Errors come in SCIM's shape (`urn:ietf:params:scim:api:messages:"
            "2.0:Error`)",
}

# The routes the engines' key may call (the ``engine`` level), and nothing else.
ENGINE_PREFIX = "/internal/v1/engines/"
# The SCIM routes (the ``scim`` level): all a ``scim`` key may call.
SCIM_PREFIX = "/scim/v2"


def is_scim_path(path: str) -> bool:
    """Whether ``path`` is under the SCIM routes (their errors are in SCIM's shape)."""
    return path == SCIM_PREFIX or path.startswith(SCIM_PREFIX + "/")

JSON = "application/json"
SSE = "text/event-stream"
TEXT = "text/plain"
MULTIPART = "multipart/form-data"

# Statuses of the engines behind the router: a replica that failed (502), none available or
# the database unreachable (503), no answer in time (504).
UPSTREAM = (502, 503, 504)
INFER = (403, 404, *UPSTREAM)  # a model is named: not allowed, unknown, its engine failed

_CONVERTER = re.compile(r"\{(\w+):[^}]*\}")


def document_path(path: str) -> str:
    """A route's path as the OpenAPI document spells it: ``{model:path}`` is ``{model}``."""
    return _CONVERTER.sub(r"{\1}", path)


@dataclass(frozen=True)
class Operation:
    """One operation: its route, who may call it, and what it takes and answers.

    ``answer`` is the model of the success body (``many``: a JSON list of it); ``media`` the
    other media types of the success answer (a stream, a file); ``errors`` the statuses of
    this operation besides 400/401/429 (and 403 for admin routes). ``document``: whether the
    OpenAPI document shows it (not the UI's files, nor the documentation's own pages).
    """

    method: Method
    path: str  # as the route table spells it (converters included: ``{model:path}``)
    access: Access
    answer: type[BaseModel] | None = None
    status: int = 200
    body: type[BaseModel] | None = None
    form: tuple[str, ...] = ()  # multipart/form-data: the required fields
    form_optional: tuple[str, ...] = ()  # and the optional ones
    media: tuple[str, ...] = ()
    many: bool = False
    errors: tuple[int, ...] = ()
    job: bool = False  # ``Prefer: respond-async`` makes it a 202 job
    anthropic: bool = False  # errors in Anthropic's shape
    also: dict[int, type[BaseModel]] = field(default_factory=dict)  # more success statuses
    document: bool = True
    # Whether the operation changes state (None: all but GET do). An auditor key may call
    # only the operations that do not; every ``admin`` one that does is audited.
    writes: bool | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.method, self.path

    @property
    def changes(self) -> bool:
        return self.method != "GET" if self.writes is None else self.writes


class Registry:
    """The declared operations, by (method, path) as the route table spells them."""

    def __init__(self) -> None:
        self.operations: dict[tuple[str, str], Operation] = {}
        self._patterns: list[tuple[str, re.Pattern[str], Operation]] | None = None

    def add(self, operation: Operation) -> None:
        if operation.key in self.operations:
            raise ValueError(f"{operation.method} {operation.path} is declared twice")
        self.operations[operation.key] = operation
        self._patterns = None

    def find(self, method: str, path: str) -> Operation | None:
        """The operation a request ``method path`` reaches (``HEAD`` is ``GET``), the first
        declared that matches; None when no route of the registry serves it."""
        if self._patterns is None:
            self._patterns = [(op.method, compile_path(op.path)[0], op) for op in self]
        method = "GET" if method == "HEAD" else method
        for declared, pattern, operation in self._patterns:
            if declared == method and pattern.match(path):
                return operation
        return None

    def __iter__(self) -> Iterator[Operation]:
        return iter(self.operations.values())

    def __len__(self) -> int:
        return len(self.operations)

    def policy(self) -> dict[tuple[str, str], Access]:
        """The access level of every route, in the registry's order."""
        return {op.key: op.access for op in self}

    def documented(self) -> dict[tuple[str, str], Operation]:
        """The operations of the OpenAPI document, by its (lowercase method, path)."""
        return {(op.method.lower(), document_path(op.path)): op for op in self if op.document}

    def public_paths(self) -> tuple[frozenset[str], tuple[str, ...]]:
        """The public routes as exact paths, and as prefixes (routes with a path parameter)."""
        exact: set[str] = set()
        prefixes: set[str] = set()
        for op in self:
            if op.access != "public":
                continue
            if "{" in op.path:
                prefixes.add(op.path.split("{", 1)[0])
            else:
                exact.add(op.path)
        return frozenset(exact), tuple(sorted(prefixes))


# Every route of the app declares itself here (``inferd.http.routes`` imports them all).
# Module-level on purpose: filled once at import by ``@endpoint``, as the routers are, and
# only read after (allowed in tests/unit/test_module_state.py).
REGISTRY = Registry()

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def endpoint(router: APIRouter, method: Method, path: str, *, access: Access,
             answer: type[BaseModel] | None = None, status: int = 200,
             body: type[BaseModel] | None = None, form: tuple[str, ...] = (),
             form_optional: tuple[str, ...] = (), media: tuple[str, ...] = (),
             many: bool = False, errors: tuple[int, ...] = (), job: bool = False,
             anthropic: bool = False, also: dict[int, type[BaseModel]] | None = None,
             document: bool = True, tags: list[str] | None = None, writes: bool | None = None,
             registry: Registry = REGISTRY) -> Callable[[Endpoint], Endpoint]:
    """Declare the operation ``method path`` (``path`` under the router's prefix) and route
    it to the decorated function, which is returned unchanged (decorators stack: one function
    may serve several paths, each declared)."""
    full = router.prefix + path
    if job and body not in ENDPOINTS.values():
        raise ValueError(f"{method} {full}: a job runs the request models of "
                         "inferd.jobs.requests.ENDPOINTS only")
    operation = Operation(method=method, path=full, access=access, answer=answer,
                          status=status, body=body, form=form, form_optional=form_optional,
                          media=media, many=many, errors=errors, job=job, anthropic=anthropic,
                          also=also or {}, document=document and router.include_in_schema,
                          writes=writes)

    def register(function: Endpoint) -> Endpoint:
        registry.add(operation)
        router.add_api_route(path, function, methods=[method], include_in_schema=document,
                             tags=list(tags) if tags is not None else None)
        return function

    return register
