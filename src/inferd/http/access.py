"""Who may call each route: the access policy, written down once.

``POLICY`` names every route of the app (its method and path as the route table spells them)
with one of the access levels below. The auth middleware lets the ``public`` routes through
without a key (``public_paths``); the README's "Security" section prints the table
(``policy_table``); ``tests/e2e/test_authz_matrix.py`` fails when the app has a route without an
entry, or when any route answers a caller otherwise than its level says.

Callers: no key, a user key, an admin key, and keys that are disabled, expired or deleted.
Every route but the public ones answers 401 to a missing or refused key (``missing_api_key``,
``invalid_api_key`` for an unknown or deleted key, ``key_disabled``, ``key_expired``). While
keys are not required (loopback, no admin key yet) every caller is the anonymous admin.
The engines' key (``INFERD_ENGINE_API_KEY`` on a gateway) is no key of the table: it may call
the ``engine`` routes and is refused everywhere else.
"""

from __future__ import annotations

from typing import Literal

Access = Literal["public", "key", "owner", "private", "admin", "engine"]

LEVELS: dict[Access, str] = {
    "public": "no key needed",
    "key": "any valid key (user or admin); a user key only reaches the models of its "
           "allow-list",
    "owner": "any valid key, on its own objects; an admin key on every key's objects. Another "
             "key's object is a 404 (never a 403, which would confirm the id exists); lists "
             "hold the caller's own objects (an admin's: everyone's)",
    "private": "any valid key, on its own objects only: admin keys too get 404 for another "
               "key's",
    "admin": "admin keys only; a user key gets 403 `admin_scope_required`",
    "engine": "the engines' key (`INFERD_ENGINE_API_KEY`) or an admin key; a user key gets 403 "
              "`engine_scope_required`. The engines' key gets 403 `engine_key_not_allowed` "
              "on every other route",
}

# The routes the engines' key may call (the ``engine`` level), and nothing else.
ENGINE_PREFIX = "/internal/v1/engines/"

GET, POST, PUT, PATCH, DELETE = "GET", "POST", "PUT", "PATCH", "DELETE"

POLICY: dict[tuple[str, str], Access] = {
    # probes, metrics, documentation, the UI's files
    (GET, "/health"): "public",
    (GET, "/ready"): "public",
    (GET, "/metrics"): "public",
    (GET, "/openapi.json"): "public",
    (GET, "/docs"): "public",
    (GET, "/redoc"): "public",
    (GET, "/docs/static/{name}"): "public",
    (GET, "/"): "public",
    (GET, "/ui"): "public",
    (GET, "/ui/"): "public",
    (GET, "/ui/static/{name:path}"): "public",
    # inference
    (POST, "/v1/chat/completions"): "key",
    (POST, "/chat/completions"): "key",  # S3's root alias
    (POST, "/v1/completions"): "key",
    (POST, "/v1/embeddings"): "key",
    (POST, "/v1/rerank"): "key",
    (POST, "/v2/rerank"): "key",
    (POST, "/v1/score"): "key",
    (POST, "/v1/moderations"): "key",
    (POST, "/v1/audio/speech"): "key",
    (POST, "/v1/audio/transcriptions"): "key",
    (POST, "/v1/messages"): "key",
    (POST, "/v1/messages/count_tokens"): "key",
    (POST, "/v1/images/generations"): "key",
    (POST, "/model/generate"): "key",  # S2
    (GET, "/v1/models"): "key",
    (GET, "/v1/models/{model_id:path}"): "key",
    (GET, "/v1/usage/series"): "key",  # the calling key's own usage
    (GET, "/v1/webhooks/secret"): "key",  # the calling key's own secret
    # the model-host API (S4): the current model is the calling key's own
    (POST, "/old/initialize"): "key",
    (POST, "/old/generate"): "key",
    (POST, "/old/stream"): "key",
    (GET, "/old/status"): "key",
    # the queued generate API (S1): ``job_id`` is scoped to the calling key
    (POST, "/generate"): "key",
    (POST, "/chat_completion"): "key",
    # durable jobs, files and batches
    (POST, "/v1/jobs"): "key",
    (GET, "/v1/jobs"): "owner",
    (GET, "/v1/jobs/{job_id}"): "owner",
    (POST, "/v1/jobs/{job_id}/cancel"): "owner",
    (DELETE, "/v1/jobs/{job_id}"): "owner",
    (GET, "/v1/jobs/{job_id}/webhook_attempts"): "owner",
    (GET, "/v1/jobs/{job_id}/events"): "owner",
    (POST, "/v1/files"): "key",
    (GET, "/v1/files"): "owner",
    (GET, "/v1/files/{file_id}"): "owner",
    (GET, "/v1/files/{file_id}/content"): "owner",
    (DELETE, "/v1/files/{file_id}"): "owner",
    (POST, "/v1/batches"): "owner",  # from the caller's own input file
    (GET, "/v1/batches"): "owner",
    (GET, "/v1/batches/{batch_id}"): "owner",
    (POST, "/v1/batches/{batch_id}/cancel"): "owner",
    # the contexts/results API (S0)
    (POST, "/contexts/"): "key",
    (GET, "/contexts/"): "owner",
    (GET, "/contexts/{context_id}"): "owner",
    (GET, "/results/"): "owner",
    (GET, "/results/{result_id}"): "owner",
    (GET, "/models/"): "key",
    (POST, "/models/send/{model_name}/{context_id}"): "owner",
    # stored responses and generated pictures
    (POST, "/v1/responses"): "private",  # ``previous_response_id``: the caller's own
    (GET, "/v1/responses/{response_id}"): "private",
    (POST, "/v1/responses/{response_id}/cancel"): "private",
    (DELETE, "/v1/responses/{response_id}"): "private",
    (GET, "/v1/responses/{response_id}/input_items"): "private",
    (POST, "/v1/responses/input_tokens"): "private",  # ``previous_response_id`` as above
    (POST, "/v1/conversations"): "key",
    (GET, "/v1/conversations/{conversation_id}"): "private",
    (POST, "/v1/conversations/{conversation_id}"): "private",
    (DELETE, "/v1/conversations/{conversation_id}"): "private",
    (POST, "/v1/conversations/{conversation_id}/items"): "private",
    (GET, "/v1/conversations/{conversation_id}/items"): "private",
    (GET, "/v1/conversations/{conversation_id}/items/{item_id}"): "private",
    (DELETE, "/v1/conversations/{conversation_id}/items/{item_id}"): "private",
    (GET, "/v1/images/{image_id}/content"): "private",
    # the control plane
    (POST, "/admin/v1/keys"): "admin",
    (GET, "/admin/v1/keys"): "admin",
    (GET, "/admin/v1/keys/{key_id}"): "admin",
    (PATCH, "/admin/v1/keys/{key_id}"): "admin",
    (POST, "/admin/v1/keys/{key_id}/disable"): "admin",
    (POST, "/admin/v1/keys/{key_id}/enable"): "admin",
    (DELETE, "/admin/v1/keys/{key_id}"): "admin",
    (GET, "/admin/v1/models"): "admin",
    (POST, "/admin/v1/models"): "admin",
    (GET, "/admin/v1/models/{model:path}"): "admin",
    (PATCH, "/admin/v1/models/{model:path}"): "admin",
    (DELETE, "/admin/v1/models/{model:path}"): "admin",
    (GET, "/admin/v1/replicas"): "admin",
    (POST, "/admin/v1/replicas"): "admin",
    (GET, "/admin/v1/replicas/{replica_id}"): "admin",
    (PATCH, "/admin/v1/replicas/{replica_id}"): "admin",
    (DELETE, "/admin/v1/replicas/{replica_id}"): "admin",
    (GET, "/admin/v1/engines"): "admin",
    (POST, "/admin/v1/engines/{model:path}/load"): "admin",
    (POST, "/admin/v1/engines/{model:path}/unload"): "admin",
    (GET, "/admin/v1/usage"): "admin",
    (GET, "/admin/v1/usage/records"): "admin",
    (GET, "/admin/v1/usage/series"): "admin",
    (GET, "/admin/v1/tables"): "admin",
    (GET, "/admin/v1/tables/{name}"): "admin",
    (POST, "/admin/v1/prompts"): "admin",
    (GET, "/admin/v1/prompts"): "admin",
    (GET, "/admin/v1/prompts/{prompt_id}"): "admin",
    (POST, "/admin/v1/prompts/{prompt_id}/versions"): "admin",
    (DELETE, "/admin/v1/prompts/{prompt_id}"): "admin",
    # the proxy toolkit's control plane (S3)
    (GET, "/tables"): "admin",
    (GET, "/tables/{name}"): "admin",
    (POST, "/generate_api_key"): "admin",
    (POST, "/delete_api_key"): "admin",
    (GET, "/models"): "admin",
    (POST, "/models"): "admin",
    (GET, "/models/{name}"): "admin",
    (DELETE, "/models/{model_id:int}"): "admin",
    (GET, "/models/{model_id:int}/replicas"): "admin",
    (POST, "/models/{model_id:int}/replicas"): "admin",
    (PUT, "/models/replicas/{replica_id:int}"): "admin",
    (DELETE, "/replicas/{replica_id:int}"): "admin",
    # engines registering with a gateway (``inferd engine`` with INFERD_GATEWAY_URL)
    (PUT, "/internal/v1/engines/{instance}"): "engine",
    (POST, "/internal/v1/engines/{instance}/heartbeat"): "engine",
    (DELETE, "/internal/v1/engines/{instance}"): "engine",
}


def public_paths() -> tuple[frozenset[str], tuple[str, ...]]:
    """The public routes as exact paths, and as prefixes (routes with a path parameter)."""
    exact: set[str] = set()
    prefixes: list[str] = []
    for (_, path), access in POLICY.items():
        if access != "public":
            continue
        if "{" in path:
            prefixes.append(path.split("{", 1)[0])
        else:
            exact.add(path)
    return frozenset(exact), tuple(sorted(prefixes))


def policy_table() -> str:
    """The policy as the README's Markdown table: one row per level, its routes listed."""
    rows = ["| access | who | routes |", "|---|---|---|"]
    for level, who in LEVELS.items():
        routes = ", ".join(f"`{method} {path}`" for (method, path), access in POLICY.items()
                           if access == level)
        rows.append(f"| `{level}` | {who} | {routes} |")
    return "\n".join(rows)
