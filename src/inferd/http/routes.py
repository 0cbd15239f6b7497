"""Every router of the app, in the order the app mounts them (the first match wins: S0's
``/models/`` before the toolkit's ``/models/{name}``...). Importing this module declares every
operation in ``inferd.http.operation.REGISTRY``."""

from __future__ import annotations

from fastapi import APIRouter

from inferd.http import anthropic, batches, docs, files, health, images, internal, jobs, metrics
from inferd.http import openai as openai_api
from inferd.http.admin import keys as admin_keys
from inferd.http.admin import loading as admin_loading
from inferd.http.admin import models as admin_models
from inferd.http.admin import prompts as admin_prompts
from inferd.http.admin import replicas as admin_replicas
from inferd.http.admin import tables as admin_tables
from inferd.http.admin import usage as admin_usage
from inferd.http.admin import usage_series
from inferd.http.compat import contexts_results, model_host, proxy_toolkit, queued_generate
from inferd.http.operation import REGISTRY, Registry
from inferd.http.ui import router as ui_router

ROUTERS: tuple[APIRouter, ...] = (
    docs.router,
    health.router,
    openai_api.router,
    anthropic.router,
    admin_models.router,
    admin_replicas.router,
    proxy_toolkit.router,  # S3: keys, models, replicas
    metrics.router,
    admin_keys.router,
    admin_usage.router,
    usage_series.router,
    admin_tables.router,
    admin_loading.router,
    admin_prompts.router,
    jobs.router,
    files.router,
    batches.router,
    contexts_results.router,  # S0
    queued_generate.router,  # S1
    model_host.router,  # S4
    images.router,  # /v1/images/*, S2's /model/generate
    internal.router,  # engines registering with a gateway
    ui_router,
)


def declared() -> Registry:
    """The registry, every route of the app declared in it."""
    return REGISTRY
