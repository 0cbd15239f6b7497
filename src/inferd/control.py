"""``Control``: the services over stored state that the HTTP routes use, built once by the
composition root (``Services.start``) and found on ``app.state.services.control``.

The HTTP layer never builds a repository: it calls these. The names it needs from the store's
records and queries (a job or context record, a usage grouping) are re-exported here, so
``inferd.http`` imports nothing of ``inferd.store`` (an import contract, ``.importlinter``).
"""

from __future__ import annotations

from dataclasses import dataclass

from inferd.audit import AuditLog
from inferd.inference import Inference
from inferd.jobs.service import JobService
from inferd.responses.conversations import ConversationService
from inferd.responses.prompts import PromptService
from inferd.responses.service import ResponseService
from inferd.routing.catalog import ReplicaCatalog
from inferd.routing.manage import ModelAdmin
from inferd.routing.registration import GatewayEnrolment
from inferd.settings import ClusterSettings, LimitSettings
from inferd.store.conversations import ConversationStore, PromptStore
from inferd.store.db import Database
from inferd.store.jobs import JobRecord
from inferd.store.jobs_contexts import ContextRecord, ContextStore
from inferd.store.monitor import TableBrowser
from inferd.store.replicas import ReplicaStore
from inferd.store.repo import KeyValueStore
from inferd.store.responses import ResponseStore
from inferd.store.storage import StorageStore
from inferd.store.usage import GroupBy
from inferd.store.usage_series import MAX_BUCKETS, SplitBy, UsageSeries

__all__ = ["MAX_BUCKETS", "ContextRecord", "Control", "GroupBy", "JobRecord", "SplitBy",
           "build_control"]


@dataclass(frozen=True, slots=True)
class Control:
    """``models``: models and replicas (admin); ``enrolment``: engines registering with a
    gateway; ``prompts``, ``conversations``, ``responses``: the Responses API's parts;
    ``contexts``: the contexts-and-results API's stored prompts; ``kv``: small stored facts (the
    model-host API's current model per key);
    ``storage``: the storage quota of a key's objects; ``tables``: the monitoring tables;
    ``usage_series``: usage per time bucket; ``audit``: the audit log (``inferd.audit``)."""

    models: ModelAdmin
    enrolment: GatewayEnrolment
    prompts: PromptService
    conversations: ConversationService
    responses: ResponseService
    contexts: ContextStore
    kv: KeyValueStore
    storage: StorageStore
    tables: TableBrowser
    usage_series: UsageSeries
    audit: AuditLog


def build_control(settings: LimitSettings, cluster: ClusterSettings, db: Database,
                  catalog: ReplicaCatalog, inference: Inference, jobs: JobService,
                  audit: AuditLog) -> Control:
    replicas = ReplicaStore(db)
    prompts = PromptService(PromptStore(db), audit=audit)
    conversations = ConversationService(ConversationStore(db),
                                        settings.conversation_max_items)
    return Control(
        models=ModelAdmin(replicas, catalog, audit=audit),
        enrolment=GatewayEnrolment(replicas, catalog, cluster),
        prompts=prompts,
        conversations=conversations,
        responses=ResponseService(inference, ResponseStore(db), jobs, conversations, prompts,
                                  settings.responses_max_chain),
        contexts=ContextStore(db),
        kv=KeyValueStore(db),
        storage=StorageStore(db),
        tables=TableBrowser(db),
        usage_series=UsageSeries(db),
        audit=audit,
    )
