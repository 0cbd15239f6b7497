"""The OpenAI Batch API on the job system: files in, one job per line, files out.

A batch and all its jobs are created in one transaction. A line that cannot run (bad JSON, no
``custom_id``, wrong ``url``) becomes a failed job of its own, so it fails that line only;
a line naming a model that does not exist refuses the whole batch before anything is stored.
When the last job finishes, the output and error files are written and the batch's final
status set, atomically and once.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypedDict

import orjson

from inferd.auth.principal import Principal
from inferd.errors import Conflict, ErrorObject, InvalidRequest, NotFound
from inferd.ids import new_id, unix_seconds
from inferd.jobs.caps import PendingCaps
from inferd.jobs.queue import enqueue_each
from inferd.jobs.requests import BATCH_ENDPOINTS
from inferd.json_bodies import check_value
from inferd.jsontypes import JsonObject
from inferd.settings import JobSettings
from inferd.store.batches import BatchRecord, BatchStore
from inferd.store.files import IMAGE_PURPOSE, FileRecord, FileStore
from inferd.store.jobs import JobRecord, JobStore

WINDOWS = ("24h",)


class FileObject(TypedDict):
    """A file as the API shows it."""

    id: str
    object: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str
    status_details: None
    expires_at: int | None


class RequestCounts(TypedDict):
    total: int
    completed: int
    failed: int


class BatchObject(TypedDict):
    """A batch as the API shows it."""

    id: str
    object: str
    endpoint: str
    errors: None
    input_file_id: str
    completion_window: str
    status: str
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    in_progress_at: int | None
    expires_at: int | None
    finalizing_at: int | None
    completed_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    failed_at: None
    expired_at: None
    request_counts: RequestCounts
    metadata: JsonObject | None


class LineFailure(TypedDict):
    """The body of a line the model answered with an error."""

    error: ErrorObject | None


class LineResponse(TypedDict):
    status_code: int
    request_id: str
    body: JsonObject | LineFailure | None


class LineError(TypedDict):
    """Why a line has no answer at all."""

    code: str
    message: str


class OutputLine(TypedDict):
    """One line of a batch's output or error file, in OpenAI's format."""

    id: str
    custom_id: str | None
    response: LineResponse | None
    error: LineError | None


def jsonl_lines(content: bytes) -> list[str]:
    """The non-empty lines of a JSONL file; refuses what is not JSONL at all."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("The file is not UTF-8 text; a batch file must be JSONL.",
                             param="file", code="invalid_file_format") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise InvalidRequest("The file is empty; a batch file needs one request per line.",
                             param="file", code="invalid_file_format")
    if not any(_object(line) is not None for line in lines):
        raise InvalidRequest("No line of the file is a JSON object; a batch file must be "
                             "JSONL.", param="file", code="invalid_file_format")
    return lines


def _object(line: str) -> JsonObject | None:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _refused(item: JsonObject) -> str | None:
    """Why a line breaks the rules of stored bodies (``inferd.json_bodies``), if it does."""
    try:
        check_value(item)
    except InvalidRequest as exc:
        return f"{exc.message} ({exc.param})" if exc.param else exc.message
    return None


def file_object(record: FileRecord) -> FileObject:
    return {"id": record.id, "object": "file", "bytes": record.bytes,
            "created_at": unix_seconds(record.created_at), "filename": record.filename,
            "purpose": record.purpose, "status": "processed", "status_details": None,
            "expires_at": unix_seconds(record.expires_at)}


def _line_error(message: str) -> ErrorObject:
    return InvalidRequest(message, code="invalid_request").to_dict()


class BatchService:
    """Create, follow, cancel and finish batches."""

    def __init__(self, finalizer: BatchFinalizer, files: FileStore, *,
                 resolve: Callable[[str], str],
                 enqueue: Callable[[JobRecord], Awaitable[None]], caps: PendingCaps) -> None:
        """``finalizer`` finishes a batch once its last job ended (the job system's
        ``Finisher`` shares it); ``resolve`` maps a model name to its canonical one
        (``ModelNotFound`` otherwise); ``enqueue`` hands a committed job to the workers."""
        self.finalizer = finalizer
        self.store = finalizer.store
        self.files = files
        self.jobs = finalizer.jobs
        self.settings = finalizer.settings
        self.resolve = resolve
        self.enqueue = enqueue
        self.caps = caps

    # -- files ------------------------------------------------------------------------------
    async def upload(self, principal: Principal, filename: str, purpose: str,
                     content: bytes) -> FileRecord:
        if purpose not in ("batch", "user_data"):
            raise InvalidRequest(f"Unsupported purpose '{purpose}'; use 'batch'.",
                                 param="purpose", code="invalid_purpose")
        lines = None
        if purpose == "batch":
            lines = len(jsonl_lines(content))
            if lines > self.settings.max_batch_lines:
                raise InvalidRequest(f"The file has {lines} requests; a batch may have at most "
                                     f"{self.settings.max_batch_lines}.", param="file",
                                     code="too_many_requests")
        now = time.time()
        record = FileRecord(id=new_id("file"), owner=principal.key_id, purpose=purpose,
                            filename=filename or "upload.jsonl", bytes=len(content),
                            created_at=now, lines=lines,
                            expires_at=now + self.settings.retention_seconds)
        await self.files.insert(record, content, principal.storage_quota)
        return record

    async def file(self, principal: Principal, file_id: str) -> FileRecord:
        record = await self.files.get(file_id)
        if record is None or record.purpose == IMAGE_PURPOSE or not (
                principal.is_admin or record.owner == principal.key_id):
            raise NotFound(f"No such File object: {file_id}", param="file_id",
                           code="file_not_found")
        return record

    # -- create -----------------------------------------------------------------------------
    async def create(self, principal: Principal, input_file_id: str, endpoint: str,
                     completion_window: str, metadata: JsonObject | None) -> BatchRecord:
        if endpoint not in BATCH_ENDPOINTS:
            raise InvalidRequest(f"Unsupported endpoint '{endpoint}'; use one of "
                                 f"{', '.join(BATCH_ENDPOINTS)}.", param="endpoint",
                                 code="invalid_endpoint")
        if completion_window not in WINDOWS:
            raise InvalidRequest("completion_window must be '24h'.", param="completion_window")
        source = await self.file(principal, input_file_id)
        if source.purpose != "batch":
            raise InvalidRequest(f"The file '{input_file_id}' has purpose '{source.purpose}'; "
                                 "a batch needs a file with purpose 'batch'.",
                                 param="input_file_id")
        now = time.time()
        batch = BatchRecord(id=new_id("batch"), owner=principal.key_id, endpoint=endpoint,
                            input_file_id=input_file_id, completion_window=completion_window,
                            status="in_progress", total=0, created_at=now, in_progress_at=now,
                            expires_at=now + 86400, meta=metadata or None)
        lines = jsonl_lines(await self.files.content(input_file_id))
        records = [self._line_job(principal, batch, index, line)
                   for index, line in enumerate(lines)]
        batch.total = len(records)
        # 429 past the key's unfinished batch lines
        await self.caps.check_batch(principal, sum(r.status == "pending" for r in records))
        await self.store.create(batch, records)
        pending = [r for r in records if r.status == "pending"]
        await enqueue_each(self.enqueue, pending)
        if not pending:
            await self.maybe_finalize(batch.id)
        return await self.get(principal, batch.id)

    def _line_job(self, principal: Principal, batch: BatchRecord, index: int,
                  line: str) -> JobRecord:
        job = JobRecord(id=new_id("job"), endpoint=batch.endpoint, model="", request={},
                        request_hash="", owner=principal.key_id, owner_scope=principal.scope,
                        source="batch", batch_id=batch.id, batch_index=index)
        item = _object(line)
        problem = None
        if item is None:
            problem = f"Line {index + 1} is not a JSON object."
        elif (refused := _refused(item)) is not None:
            problem = f"Line {index + 1}: {refused}"
        else:
            job.custom_id = str(item["custom_id"])[:191] if item.get("custom_id") else None
            body = item.get("body")
            if job.custom_id is None:
                problem = f"Line {index + 1} has no custom_id."
            elif str(item.get("method", "POST")).upper() != "POST":
                problem = f"Line {index + 1}: method must be POST."
            elif item.get("url") != batch.endpoint:
                problem = (f"Line {index + 1}: url '{item.get('url')}' does not match the "
                           f"batch endpoint '{batch.endpoint}'.")
            elif not isinstance(body, dict) or not isinstance(body.get("model"), str):
                problem = f"Line {index + 1}: body must be an object with a 'model'."
            else:
                job.model = self._model(principal, str(body["model"]), index)
                job.request = {k: v for k, v in body.items()
                               if k not in ("stream", "stream_options")}
        if problem is not None:
            job.status, job.finished_at = "failed", job.created_at
            job.error = _line_error(problem)
        return job

    def _model(self, principal: Principal, name: str, index: int) -> str:
        try:
            model = self.resolve(name)
        except NotFound:
            raise InvalidRequest(f"Line {index + 1} of the input file names the model '{name}', "
                                 "which does not exist; no batch was created.",
                                 param="input_file_id", code="model_not_found") from None
        if not principal.may_use(model):
            raise InvalidRequest(f"Line {index + 1}: this key may not use the model '{model}'; "
                                 "no batch was created.", param="input_file_id",
                                 code="model_not_allowed")
        return model

    # -- read / cancel ----------------------------------------------------------------------
    async def get(self, principal: Principal, batch_id: str) -> BatchRecord:
        batch = await self.store.get(batch_id)
        if batch is None or not (principal.is_admin or batch.owner == principal.key_id):
            raise NotFound(f"No batch found with id '{batch_id}'.", param="batch_id",
                           code="batch_not_found")
        return batch

    async def cancel(self, principal: Principal, batch_id: str) -> BatchRecord:
        batch = await self.get(principal, batch_id)
        if not await self.store.mark_cancelling(batch.id):
            raise Conflict(f"Cannot cancel a batch with status '{batch.status}'.",
                           code="batch_not_cancellable")
        await self.jobs.cancel_batch_pending(batch.id)
        await self.maybe_finalize(batch.id)
        return await self.get(principal, batch_id)

    async def counts(self, batch: BatchRecord) -> RequestCounts:
        by_status = await self.jobs.batch_counts(batch.id)
        failed = by_status.get("failed", 0) + by_status.get("cancelled", 0)
        return {"total": batch.total, "completed": by_status.get("completed", 0),
                "failed": failed}

    async def batch_object(self, batch: BatchRecord) -> BatchObject:
        return {"id": batch.id, "object": "batch", "endpoint": batch.endpoint, "errors": None,
                "input_file_id": batch.input_file_id,
                "completion_window": batch.completion_window, "status": batch.status,
                "output_file_id": batch.output_file_id, "error_file_id": batch.error_file_id,
                "created_at": unix_seconds(batch.created_at),
                "in_progress_at": unix_seconds(batch.in_progress_at),
                "expires_at": unix_seconds(batch.expires_at),
                "finalizing_at": unix_seconds(batch.finalizing_at),
                "completed_at": unix_seconds(batch.completed_at),
                "cancelling_at": unix_seconds(batch.cancelling_at),
                "cancelled_at": unix_seconds(batch.cancelled_at),
                "failed_at": None, "expired_at": None,
                "request_counts": await self.counts(batch), "metadata": batch.meta}


    async def maybe_finalize(self, batch_id: str) -> bool:
        return await self.finalizer.maybe_finalize(batch_id)


class BatchFinalizer:
    """Finishes a batch when no job of it is left: its output and error files and its final
    status (apart from ``BatchService``: what finishes jobs needs this, not the enqueueing)."""

    def __init__(self, store: BatchStore, jobs: JobStore, settings: JobSettings) -> None:
        self.store = store
        self.jobs = jobs
        self.settings = settings

    async def maybe_finalize(self, batch_id: str) -> bool:
        """Write the output files and the final status once no job of the batch is left."""
        by_status = await self.jobs.batch_counts(batch_id)
        if by_status.get("pending", 0) or by_status.get("running", 0):
            return False
        batch = await self.store.get(batch_id)
        if batch is None or batch.status not in ("in_progress", "cancelling"):
            return False
        output: list[OutputLine] = []
        errors: list[OutputLine] = []
        for job in await self.jobs.of_batch(batch_id):
            line = output_line(job)
            (output if job.status == "completed" else errors).append(line)
        outputs: list[tuple[FileRecord, bytes]] = []
        ids: list[str | None] = []
        for kind, lines in (("output", output), ("error", errors)):
            if not lines:
                ids.append(None)
                continue
            content = b"".join(orjson.dumps(line) + b"\n" for line in lines)
            now = time.time()
            record = FileRecord(id=new_id("file"), owner=batch.owner, purpose="batch_output",
                                filename=f"{batch_id}_{kind}.jsonl", bytes=len(content),
                                created_at=now, lines=len(lines),
                                expires_at=now + self.settings.retention_seconds)
            outputs.append((record, content))
            ids.append(record.id)
        return await self.store.finalize(batch_id, outputs, ids[0], ids[1])


def output_line(job: JobRecord) -> OutputLine:
    """One line of the output or error file, in OpenAI's format."""
    line: OutputLine = {"id": f"batch_req_{job.id.removeprefix('job_')}",
                        "custom_id": job.custom_id, "response": None, "error": None}
    if job.status == "completed":
        line["response"] = {"status_code": 200, "request_id": job.id, "body": job.result}
    elif job.status_code is not None:
        line["response"] = {"status_code": job.status_code, "request_id": job.id,
                            "body": {"error": job.error}}
    else:
        error = job.error
        line["error"] = {"code": (error.get("code") if error else None) or "failed",
                         "message": (error.get("message") if error else None)
                         or "The request failed."}
    return line
