"""Every router of the app, in the order the app mounts them (the first matching route
answers). Importing this module declares every operation in
``inferd.http.operation.REGISTRY``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import APIRouter

from inferd.http import (
    anthropic,
    batches,
    docs,
    files,
    health,
    images,
    internal,
    jobs,
    metrics,
    scim,
    sso,
)
from inferd.http import openai as openai_api
from inferd.http import request_log as request_log_api
from inferd.http.admin import audit as admin_audit
from inferd.http.admin import keys as admin_keys
from inferd.http.admin import loading as admin_loading
from inferd.http.admin import models as admin_models
from inferd.http.admin import prompts as admin_prompts
from inferd.http.admin import replicas as admin_replicas
from inferd.http.admin import tables as admin_tables
from inferd.http.admin import teams as admin_teams
from inferd.http.admin import usage as admin_usage
from inferd.http.admin import usage_series
from inferd.http.compat import (
    contexts_results,
    image_backend,
    model_host,
    proxy_toolkit,
    queued_generate,
)
from inferd.http.operation import REGISTRY, Registry
from inferd.http.ui import router as ui_router

ROUTERS: tuple[APIRouter, ...] = (
    docs.router,
    health.router,
    openai_api.router,
    anthropic.router,
    admin_models.router,
    admin_replicas.router,
    proxy_toolkit.router,  # the proxy toolkit's keys, models, replicas
    metrics.router,
    admin_keys.router,
    admin_teams.teams_router,
    admin_teams.users_router,
    scim.router,  # SCIM provisioning of users and teams
    sso.admin_router,  # single sign-on's group rules
    admin_usage.router,
    usage_series.router,
    admin_tables.router,
    admin_loading.router,
    admin_prompts.router,
    admin_audit.router,
    request_log_api.router,
    jobs.router,
    files.router,
    batches.router,
    contexts_results.router,
    queued_generate.router,
    model_host.router,
    images.router,  # /v1/images/*
    image_backend.router,  # the image backend's /model/generate
    internal.router,  # engines registering with a gateway
    sso.ui_router,  # single sign-on's login (before the UI's files)
    ui_router,
)


def _routed(routes: Iterable[Any]) -> Iterator[tuple[str, str]]:
    """(method, path) of each route, in the order the app tries them."""
    for entry in routes:
        included = getattr(entry, "effective_route_contexts", None)
        for route in included() if included is not None else [entry]:
            for method in sorted(getattr(route, "methods", None) or ()):
                yield method, route.path


def declared() -> Registry:
    """Every declared operation, in the order the app routes them (creating an object before
    deleting it, as written), then any declared outside ``ROUTERS``."""
    ordered = Registry()
    for key in _routed(route for router in ROUTERS for route in router.routes):
        if key in REGISTRY.operations and key not in ordered.operations:
            ordered.add(REGISTRY.operations[key])
    for op in REGISTRY:
        if op.key not in ordered.operations:
            ordered.add(op)
    return ordered
