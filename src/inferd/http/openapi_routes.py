"""What each route takes and answers, for the OpenAPI document (``inferd.http.openapi``).

Most routes read their bodies themselves (to answer errors in the OpenAI shape, and fast) and
build their answers as plain dicts, so the framework cannot see either: this table tells the
document, per operation, the request body model, the success status with its answer model or
media types, and the error statuses the route can send besides the ones every route shares.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel

from inferd.anthropic.translate import CountTokensRequest, MessagesRequest
from inferd.auth.admin import KeySpec, KeyUpdate
from inferd.http.batches import BatchCreate
from inferd.http.compat.contexts_results import ContextCreate
from inferd.http.compat.model_host import Initialize, OldChat
from inferd.http.compat.proxy_toolkit import DeleteKeyRequest, GenerateKeyRequest
from inferd.http.compat.queued_generate import S1Chat, S1Generate
from inferd.http.images import S2Generate
from inferd.http.jobs import JobCreate
from inferd.routing.manage import ModelCreate, ModelUpdate, ReplicaCreate, ReplicaUpdate
from inferd.routing.registration import EngineHeartbeat, EngineRegister
from inferd.schemas import answers as a
from inferd.schemas import answers_control as c
from inferd.schemas.images import ImageGenerationRequest
from inferd.schemas.openai import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from inferd.schemas.passthrough import ModerationRequest, SpeechRequest
from inferd.schemas.rerank import RerankRequest, ScoreRequest
from inferd.schemas.responses import (
    ConversationCreate,
    ConversationItemsCreate,
    ConversationUpdate,
    InputTokensRequest,
    PromptCreate,
    PromptTemplate,
    ResponseCreateRequest,
)
from inferd.settings import ReplicaSpec

JSON = "application/json"
SSE = "text/event-stream"
TEXT = "text/plain"
MULTIPART = "multipart/form-data"

# Statuses of the engines behind the router: a replica that failed (502), none available or
# the database unreachable (503), no answer in time (504).
UPSTREAM = (502, 503, 504)


@dataclass(frozen=True)
class Op:
    """One operation: what it takes and answers.

    ``answer`` is the model of the success body (``many``: a JSON list of it); ``media`` the
    other media types of the success answer (a stream, a file); ``errors`` the statuses of
    this operation besides 400/401/429 (and 403 for admin routes).
    """

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


INFER = (403, 404, *UPSTREAM)  # a model is named: not allowed, unknown, its engine failed
ADMIN_ONE = (403, 404, 409)
OPS: dict[tuple[str, str], Op] = {
    # health and monitoring (public)
    ("get", "/health"): Op(c.Health),
    ("get", "/ready"): Op(c.Readiness, also={503: c.Readiness}, errors=(400,)),  # ?deep=
    ("get", "/metrics"): Op(media=(TEXT,)),
    # the OpenAI API
    ("post", "/v1/chat/completions"): Op(a.ChatCompletion, body=ChatCompletionRequest,
                                         media=(SSE,), errors=(*INFER, 409, 413), job=True),
    ("post", "/v1/completions"): Op(a.TextCompletion, body=CompletionRequest, media=(SSE,),
                                    errors=(*INFER, 409, 413), job=True),
    ("post", "/v1/embeddings"): Op(a.EmbeddingList, body=EmbeddingRequest,
                                   errors=(*INFER, 409, 413), job=True),
    ("get", "/v1/models"): Op(a.ModelList),
    ("get", "/v1/models/{model_id}"): Op(a.Model, errors=(404,)),
    ("post", "/v1/rerank"): Op(a.RerankAnswer, body=RerankRequest, errors=(*INFER, 413)),
    ("post", "/v1/score"): Op(a.ScoreList, body=ScoreRequest, errors=(*INFER, 413)),
    ("post", "/v1/moderations"): Op(a.ModerationList, body=ModerationRequest,
                                    errors=(*INFER, 413)),
    ("post", "/v1/audio/speech"): Op(body=SpeechRequest, media=("audio/*",
                                                                "application/octet-stream"),
                                     errors=(*INFER, 413)),
    ("post", "/v1/audio/transcriptions"): Op(a.Transcription, form=("file",),
                                             form_optional=("model", "response_format"),
                                             media=(TEXT,),
                                             errors=(*INFER, 413)),
    ("post", "/v1/images/generations"): Op(a.ImagesAnswer, body=ImageGenerationRequest,
                                           errors=(*INFER, 409, 413), job=True),
    ("get", "/v1/images/{image_id}/content"): Op(media=("image/png", "image/jpeg",
                                                        "image/webp"), errors=(404,)),
    ("get", "/v1/usage/series"): Op(a.UsageSeries, errors=(503,)),
    # the Responses API
    ("post", "/v1/responses"): Op(a.ResponseObject, body=ResponseCreateRequest, media=(SSE,),
                                  errors=(*INFER, 409, 413)),
    ("get", "/v1/responses/{response_id}"): Op(a.ResponseObject, media=(SSE,),
                                               errors=(404, 503)),
    ("post", "/v1/responses/{response_id}/cancel"): Op(a.ResponseObject,
                                                       errors=(404, 409, 503)),
    ("delete", "/v1/responses/{response_id}"): Op(a.Deleted, errors=(404, 409, 503)),
    ("get", "/v1/responses/{response_id}/input_items"): Op(a.ItemList, errors=(404, 503)),
    ("post", "/v1/responses/input_tokens"): Op(a.InputTokens, body=InputTokensRequest,
                                               errors=(403, 404, 413, 503)),
    # the Conversations API
    ("post", "/v1/conversations"): Op(a.Conversation, body=ConversationCreate,
                                      errors=(413, 503)),
    ("get", "/v1/conversations/{conversation_id}"): Op(a.Conversation, errors=(404, 503)),
    ("post", "/v1/conversations/{conversation_id}"): Op(a.Conversation,
                                                        body=ConversationUpdate,
                                                        errors=(404, 413, 503)),
    ("delete", "/v1/conversations/{conversation_id}"): Op(a.Deleted, errors=(404, 503)),
    ("post", "/v1/conversations/{conversation_id}/items"): Op(
        a.ItemList, body=ConversationItemsCreate, errors=(404, 413, 503)),
    ("get", "/v1/conversations/{conversation_id}/items"): Op(a.ItemList, errors=(404, 503)),
    ("get", "/v1/conversations/{conversation_id}/items/{item_id}"): Op(
        a.ConversationItem, errors=(404, 503)),
    ("delete", "/v1/conversations/{conversation_id}/items/{item_id}"): Op(
        a.Conversation, errors=(404, 503)),
    # Anthropic's Messages API
    ("post", "/v1/messages"): Op(a.AnthropicMessage, body=MessagesRequest, media=(SSE,),
                                 errors=(403, 404, 413, 502, 504, 529), anthropic=True),
    ("post", "/v1/messages/count_tokens"): Op(a.TokenCount, body=CountTokensRequest,
                                              errors=(403, 404, 413, 529), anthropic=True),
    # jobs, files, batches
    ("post", "/v1/jobs"): Op(a.Job, status=202, body=JobCreate, also={200: a.Job},
                             errors=(403, 404, 409, 413, 503)),
    ("get", "/v1/jobs"): Op(a.JobList, errors=(503,)),
    ("get", "/v1/jobs/{job_id}"): Op(a.Job, errors=(404, 503)),
    ("post", "/v1/jobs/{job_id}/cancel"): Op(a.Job, errors=(404, 409, 503)),
    ("delete", "/v1/jobs/{job_id}"): Op(a.Deleted, errors=(404, 409, 503)),
    ("get", "/v1/jobs/{job_id}/webhook_attempts"): Op(a.WebhookAttempts, errors=(404, 503)),
    ("get", "/v1/jobs/{job_id}/events"): Op(media=(SSE,), errors=(404, 503)),
    ("get", "/v1/webhooks/secret"): Op(a.WebhookSecret, errors=(403, 503)),
    ("post", "/v1/files"): Op(a.File, form=("file", "purpose"), errors=(413, 503)),
    ("get", "/v1/files"): Op(a.FileList, errors=(503,)),
    ("get", "/v1/files/{file_id}"): Op(a.File, errors=(404, 503)),
    ("get", "/v1/files/{file_id}/content"): Op(media=("application/jsonl",
                                                      "application/octet-stream"),
                                               errors=(404, 503)),
    ("delete", "/v1/files/{file_id}"): Op(a.Deleted, errors=(404, 503)),
    ("post", "/v1/batches"): Op(a.Batch, body=BatchCreate, errors=(403, 404, 413, 503)),
    ("get", "/v1/batches"): Op(a.BatchList, errors=(503,)),
    ("get", "/v1/batches/{batch_id}"): Op(a.Batch, errors=(404, 503)),
    ("post", "/v1/batches/{batch_id}/cancel"): Op(a.Batch, errors=(404, 409, 503)),
    # the control plane (admin keys only)
    ("post", "/admin/v1/keys"): Op(c.ApiKey, status=201, body=KeySpec, errors=(409, 413, 503)),
    ("get", "/admin/v1/keys"): Op(c.ApiKeyList, errors=(503,)),
    ("get", "/admin/v1/keys/{key_id}"): Op(c.ApiKey, errors=(404, 503)),
    ("patch", "/admin/v1/keys/{key_id}"): Op(c.ApiKey, body=KeyUpdate,
                                             errors=(404, 409, 413, 503)),
    ("post", "/admin/v1/keys/{key_id}/disable"): Op(c.ApiKey, errors=(404, 409, 503)),
    ("post", "/admin/v1/keys/{key_id}/enable"): Op(c.ApiKey, errors=(404, 503)),
    ("delete", "/admin/v1/keys/{key_id}"): Op(a.Deleted, errors=(404, 409, 503)),
    ("get", "/admin/v1/models"): Op(c.ManagedModelList, errors=(503,)),
    ("post", "/admin/v1/models"): Op(c.ManagedModel, status=201, body=ModelCreate,
                                     errors=(409, 413, 503)),
    ("get", "/admin/v1/models/{model}"): Op(c.ManagedModel, errors=(404, 503)),
    ("patch", "/admin/v1/models/{model}"): Op(c.ManagedModel, body=ModelUpdate,
                                              errors=(404, 409, 413, 503)),
    ("delete", "/admin/v1/models/{model}"): Op(a.Deleted, errors=(404, 409, 503)),
    ("get", "/admin/v1/replicas"): Op(c.ReplicaList, errors=(503,)),
    ("post", "/admin/v1/replicas"): Op(c.Replica, status=201, body=ReplicaCreate,
                                       errors=(404, 409, 413, 503)),
    ("get", "/admin/v1/replicas/{replica_id}"): Op(c.Replica, errors=(404, 503)),
    ("patch", "/admin/v1/replicas/{replica_id}"): Op(c.Replica, body=ReplicaUpdate,
                                                     errors=(404, 409, 413, 503)),
    ("delete", "/admin/v1/replicas/{replica_id}"): Op(a.Deleted, errors=(404, 503)),
    ("get", "/admin/v1/engines"): Op(c.EngineList),
    ("post", "/admin/v1/engines/{model}/load"): Op(c.Engine, errors=(404, 409, 503)),
    ("post", "/admin/v1/engines/{model}/unload"): Op(c.Engine, errors=(404, 409)),
    ("get", "/admin/v1/usage"): Op(c.UsageGroups, errors=(503,)),
    ("get", "/admin/v1/usage/records"): Op(c.UsageRecords, errors=(503,)),
    ("get", "/admin/v1/usage/series"): Op(a.UsageSeries, errors=(503,)),
    ("get", "/admin/v1/tables"): Op(c.TableNames),
    ("get", "/admin/v1/tables/{name}"): Op(c.TableRows, errors=(404, 503)),
    ("post", "/admin/v1/prompts"): Op(c.Prompt, status=201, body=PromptCreate,
                                      errors=(404, 413, 503)),
    ("get", "/admin/v1/prompts"): Op(c.PromptList, errors=(503,)),
    ("get", "/admin/v1/prompts/{prompt_id}"): Op(c.Prompt, errors=(404, 503)),
    ("post", "/admin/v1/prompts/{prompt_id}/versions"): Op(c.Prompt, status=201,
                                                           body=PromptTemplate,
                                                           errors=(404, 413, 503)),
    ("delete", "/admin/v1/prompts/{prompt_id}"): Op(a.Deleted, errors=(404, 503)),
    # engines registering with a gateway (the engines' key or an admin key)
    ("put", "/internal/v1/engines/{instance}"): Op(c.EngineRegistered, body=EngineRegister,
                                                   errors=(403, 413, 503)),
    ("post", "/internal/v1/engines/{instance}/heartbeat"): Op(c.EngineBeat,
                                                              body=EngineHeartbeat,
                                                              errors=(403, 404, 413, 503)),
    ("delete", "/internal/v1/engines/{instance}"): Op(c.EngineLeft, errors=(403, 404, 503)),
    # the proxy toolkit's routes (S3)
    ("get", "/tables"): Op(c.TableNames),
    ("get", "/tables/{name}"): Op(c.TableRows, errors=(404, 503)),
    ("post", "/generate_api_key"): Op(c.GeneratedKey, body=GenerateKeyRequest,
                                      errors=(413, 503)),
    ("post", "/delete_api_key"): Op(c.KeyRevoked, body=DeleteKeyRequest,
                                    errors=(404, 409, 413, 503)),
    ("get", "/models"): Op(c.ManagedModel, many=True, errors=(403, 503)),
    ("post", "/models"): Op(c.ManagedModel, status=201, body=ModelCreate,
                            errors=(403, 409, 413, 503)),
    ("get", "/models/{name}"): Op(c.ManagedModel, errors=(403, 404, 503)),
    # a path that is no number names a model for GET only: 405
    ("delete", "/models/{model_id}"): Op(a.Deleted, errors=(403, 404, 405, 409, 503)),
    ("get", "/models/{model_id}/replicas"): Op(c.Replica, many=True, errors=(403, 404, 503)),
    ("post", "/models/{model_id}/replicas"): Op(c.Replica, status=201, body=ReplicaSpec,
                                                errors=(403, 404, 409, 413, 503)),
    ("put", "/models/replicas/{replica_id}"): Op(c.Replica, body=ReplicaUpdate,
                                                 errors=(403, 404, 409, 413, 503)),
    ("delete", "/replicas/{replica_id}"): Op(a.Deleted, errors=(403, 404, 503)),
    # the contexts/results API (S0)
    ("post", "/contexts/"): Op(c.Context, body=ContextCreate, errors=(413, 503)),
    ("get", "/contexts/"): Op(c.Context, many=True, errors=(503,)),
    ("get", "/contexts/{context_id}"): Op(c.Context, errors=(404, 503)),
    ("get", "/results/"): Op(c.ContextResult, many=True, errors=(503,)),
    ("get", "/results/{result_id}"): Op(c.ContextResult, errors=(404, 503)),
    ("get", "/models/"): Op(c.RepositoryModel, many=True),
    ("post", "/models/send/{model_name}/{context_id}"): Op(c.ContextResult, status=202,
                                                           errors=(403, 404, 503)),
    # the queued generate API (S1): the job's own failure status when it failed
    ("post", "/generate"): Op(c.GeneratedContent, body=S1Generate,
                              errors=(403, 404, 408, 409, 413, *UPSTREAM)),
    ("post", "/chat_completion"): Op(c.GeneratedContent, body=S1Chat,
                                     errors=(403, 404, 408, 409, 413, *UPSTREAM)),
    # the model-host API (S4)
    ("post", "/old/initialize"): Op(c.HostInitialized, body=Initialize,
                                    errors=(403, 404, 413, 503)),
    ("post", "/old/generate"): Op(c.HostGenerated, body=OldChat, errors=(*INFER, 413)),
    ("post", "/old/stream"): Op(body=OldChat, media=(TEXT,), errors=(*INFER, 413)),
    ("get", "/old/status"): Op(c.HostStatus, errors=(503,)),
    # the image backend API (S2)
    ("post", "/model/generate"): Op(body=S2Generate, media=("image/png",),
                                    errors=(*INFER, 409, 413)),
}
