"""The Responses API's logic: create (answered, streamed or in the background), retrieve,
follow, cancel, delete, list a response's input items, and count a request's input tokens.

A stored response belongs to the key that made it: any other key is told it does not exist.
A request's context is one of: the chain of stored responses it continues
(``previous_response_id``, read back link by link), or a conversation's items
(``conversation``); a ``prompt`` template's instructions and messages come first.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import orjson

from inferd.auth.principal import Principal
from inferd.engines.local import LocalTextEngine
from inferd.errors import Conflict, InferdError, InvalidRequest, NotFound, Unavailable
from inferd.inference import Inference, estimate_chat_prompt
from inferd.jsontypes import JsonObject
from inferd.responses import RESPONSES
from inferd.responses.background import EVENT_KIND, FIRST_SEQ, ResponseJob
from inferd.responses.conversations import ConversationService, stored_items
from inferd.responses.events import Event, ResponseStream, failed_event
from inferd.responses.prompts import PromptService
from inferd.routing.affinity import chat_head_key, session_key
from inferd.schemas.chunks import Chunk
from inferd.schemas.openai import ChatCompletionRequest
from inferd.schemas.responses import (
    Deleted,
    InputTokens,
    InputTokensRequest,
    Item,
    ItemPage,
    PromptRef,
    ResponseCreateRequest,
    base_response,
    finish,
    item_page,
    items_to_messages,
    new_id,
    normalize_input,
    output_from_chat,
    output_items,
    own_names,
    to_chat,
)
from inferd.store.jobs import JobRecord, JobStore
from inferd.store.responses import ChainTooLong, ResponseRecord, ResponseStore
from inferd.store.storage import StorageStore


class BackgroundJobs(Protocol):
    """What background responses need of the job service. The job service runs background
    responses, so it imports this package; the dependency back is this protocol."""

    store: JobStore

    async def submit(self, principal: Principal, endpoint: str, body: JsonObject, *,
                     source: str = "api") -> tuple[JobRecord, bool]: ...

    def events(self, principal: Principal, job_id: str,
               after: int = 0) -> AsyncIterator[tuple[int | None, str, str]]: ...

    async def cancel(self, principal: Principal, job_id: str) -> JobRecord: ...

    async def delete(self, principal: Principal, job_id: str) -> None: ...


TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
JOB_STATUS = {"pending": "queued", "running": "in_progress"}
_ITEM_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}


@dataclass
class Prepared:
    """A create request resolved against its conversation."""

    request: ResponseCreateRequest
    response: JsonObject
    input_items: list[Item]
    chat: ChatCompletionRequest
    conversation_id: str | None = None


def _with_ids(items: list[Item]) -> list[Item]:
    """Input items as ``/input_items`` lists them: each with an id."""
    return [item if item.get("id") else
            {"id": new_id(_ITEM_PREFIX.get(str(item.get("type", "message")), "item")), **item}
            for item in items]


class ResponseService:
    """Everything the ``/v1/responses`` routes do."""

    def __init__(self, inference: Inference, store: ResponseStore,
                 jobs: BackgroundJobs | None, conversations: ConversationService,
                 prompts: PromptService, max_chain: int) -> None:
        self.inference = inference
        self.store = store
        self.jobs = jobs
        self.conversations = conversations
        self.prompts = prompts
        self.max_chain = max_chain

    # -- create -----------------------------------------------------------------------------
    async def prepare(self, principal: Principal, request: ResponseCreateRequest) -> Prepared:
        if request.background and request.store is False:
            raise InvalidRequest("background responses must be stored (store: true).",
                                 param="store")
        conversation_id = request.conversation_id
        if conversation_id is not None and request.previous_response_id is not None:
            raise InvalidRequest("conversation and previous_response_id cannot be used "
                                 "together.", param="conversation")
        prompt_items: list[Item] = []
        if request.prompt is not None:
            instructions, prompt_items, version = await self.prompts.resolve(principal,
                                                                             request.prompt)
            update: dict[str, PromptRef | str] = {"prompt": request.prompt.model_copy(
                update={"version": version})}
            if request.instructions is None and instructions is not None:
                update["instructions"] = instructions
            request = request.model_copy(update=update)
        if request.input is None and not prompt_items:
            raise InvalidRequest("input is required (or a prompt with messages).",
                                 param="input", code="missing_required_parameter")
        history: list[Item] = []
        route: str | None = None  # the chain's or conversation's routing key
        if request.previous_response_id is not None:
            history, route = await self._history(principal, request.previous_response_id)
        elif conversation_id is not None:
            route = session_key("conversation\0" + conversation_id)
            conversation = await self.conversations.own(principal, conversation_id,
                                                        "conversation")
            history = await self.conversations.store.items(conversation.id)
        given = [] if request.input is None else normalize_input(request.input)
        input_items = _with_ids(given)
        if conversation_id is not None:
            input_items = stored_items(input_items, "input")
            await self.conversations.check_room(conversation_id, len(input_items) + 1)
        if request.store is not False:  # refused before it runs when the key's storage is full
            size = len(orjson.dumps(input_items))
            await StorageStore(self.store.db).check_room(principal.key_id,
                                                         principal.storage_quota, size=size)
        status = "queued" if request.background else "in_progress"
        response = base_response(request, new_id("resp"), status)
        chat = to_chat(request, prompt_items + history + input_items)
        chat._route = route
        return Prepared(request, response, input_items, chat, conversation_id)

    async def history(self, principal: Principal, previous_id: str) -> list[Item]:
        """The conversation up to and including the output of ``previous_id``: the stored
        responses of its chain, oldest first, each with its input items and output."""
        return (await self._history(principal, previous_id))[0]

    async def _history(self, principal: Principal, previous_id: str
                       ) -> tuple[list[Item], str | None]:
        """``history``, and the routing key of the chain: its first response's (the head of
        its prompt), so that every response of a chain goes where the first went."""
        try:
            chain = await self.store.chain(previous_id, self.max_chain)
        except ChainTooLong:
            raise InvalidRequest(
                f"The conversation of '{previous_id}' is longer than {self.max_chain} "
                "responses (INFERD_RESPONSES_MAX_CHAIN); start a new one, or use a "
                "conversation.", param="previous_response_id",
                code="conversation_too_long") from None
        if not chain or chain[0].deleted or chain[0].owner != principal.key_id:
            raise NotFound(f"No response with id '{previous_id}'.",
                           param="previous_response_id", code="response_not_found")
        done = await self.current(principal, chain[0])
        if done["status"] not in ("completed", "incomplete"):
            raise InvalidRequest(f"The previous response is {done['status']}.",
                                 param="previous_response_id")
        history: list[Item] = []
        for record in reversed(chain):
            if record.history is not None:  # stored whole before revision 0010
                history = list(record.history)
            else:
                history.extend(record.input_items)
            final = done if record is chain[0] else (record.response or {})
            history.extend(output_items(final))
        return history, _chain_key(chain[-1])

    async def _save(self, principal: Principal, prepared: Prepared,
                    response: JsonObject, job_id: str | None = None) -> None:
        if prepared.conversation_id is not None and job_id is None:  # room checked before
            await self.conversations.store.add_items(
                prepared.conversation_id,
                prepared.input_items + stored_items(output_items(response)))
        if prepared.request.store is False:
            return
        await self.store.insert(ResponseRecord(
            id=str(response["id"]), owner=principal.key_id, model=prepared.request.model,
            created_at=time.time(), input_items=prepared.input_items, job_id=job_id,
            response=response, previous_id=prepared.request.previous_response_id))

    async def count_input_tokens(self, principal: Principal,
                                 request: InputTokensRequest) -> InputTokens:
        """``POST /v1/responses/input_tokens``: the prompt tokens the request would send."""
        if request.model is None:
            raise InvalidRequest("model is required to count tokens.", param="model",
                                 code="missing_required_parameter")
        prepared = await self.prepare(principal, request.model_copy(
            update={"background": False, "stream": False}))
        chat = prepared.chat
        self.inference.check_model(principal, chat.model)
        estimate = estimate_chat_prompt(chat)

        async def count() -> int:  # the model's own tokenizer, off the event loop
            engine = self.inference.router.pick(chat.model).engine
            if isinstance(engine, LocalTextEngine):
                return (await asyncio.to_thread(engine.prepare_chat, chat)).prompt_tokens
            return estimate

        # limited and metered like any request (as Anthropic's count_tokens)
        tokens = await self.inference.count_tokens("responses.input_tokens", chat.model,
                                                   principal, estimate, count)
        return {"object": "response.input_tokens", "input_tokens": tokens}

    async def create(self, principal: Principal, prepared: Prepared) -> JsonObject:
        try:
            result = await self.inference.chat(prepared.chat, principal)
        except InvalidRequest as exc:
            raise own_names(exc) from None
        response = finish(prepared.response, output_from_chat(result), result.usage,
                          result.finish_reason())
        await self._save(principal, prepared, response)
        return response

    async def create_stream(self, principal: Principal,
                            prepared: Prepared) -> AsyncIterator[Event]:
        """A started stream: an error before the first token is raised here."""
        chat = prepared.chat.model_copy(update={"stream": True})
        try:
            chunks = await self.inference.chat_stream(chat, principal)
        except InvalidRequest as exc:
            raise own_names(exc) from None
        return _numbered(self._stream(principal, prepared, chunks))

    async def _stream(self, principal: Principal, prepared: Prepared,
                      chunks: AsyncIterator[Chunk]) -> AsyncGenerator[Event]:
        state = ResponseStream(prepared.response)
        for event in state.start():
            yield event
        try:
            async for chunk in chunks:
                for event in state.feed(chunk):
                    yield event
        except InferdError as exc:
            yield failed_event(prepared.response, exc.to_dict())
            return
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        for event in state.finish():
            if event["type"] in TERMINAL_EVENTS:
                await self._save(principal, prepared, state.response)
            yield event

    async def create_background(self, principal: Principal,
                                prepared: Prepared) -> JsonObject:
        """Commit the response and its job, then answer ``queued``."""
        jobs = self._jobs()
        body = ResponseJob(model=prepared.request.model,
                           chat=prepared.chat.model_dump(exclude_none=True),
                           response=prepared.response,
                           conversation=prepared.conversation_id).model_dump()
        job, _ = await jobs.submit(principal, RESPONSES, body, source="responses")
        if prepared.conversation_id is not None:  # the output follows when the job ends
            await self.conversations.store.add_items(prepared.conversation_id,
                                                     prepared.input_items)
        await self._save(principal, prepared, prepared.response, job_id=job.id)
        return prepared.response

    # -- read -------------------------------------------------------------------------------
    def _jobs(self) -> BackgroundJobs:
        if self.jobs is None:
            raise Unavailable("Background responses need the job system, which is not "
                              "running in this process.")
        return self.jobs

    async def _own(self, principal: Principal, response_id: str,
                   param: str = "response_id") -> ResponseRecord:
        record = await self.store.get(response_id)
        if record is None or record.deleted or record.owner != principal.key_id:
            raise NotFound(f"No response with id '{response_id}'.", param=param,
                           code="response_not_found")
        return record

    async def current(self, principal: Principal, record: ResponseRecord) -> JsonObject:
        """The response as it is now (a background one: its job's state or result)."""
        response = record.response or {}
        if record.job_id is None or self.jobs is None:
            return response
        job = await self.jobs.store.get(record.job_id)
        if job is None:  # the job was purged: the row holds the last state read
            return response
        if job.status in JOB_STATUS:
            return {**response, "status": JOB_STATUS[job.status]}
        if job.status == "completed" and job.result is not None:
            final = job.result
        else:
            final = failed_event(response, job.error or {}, job.status)["response"]
            if job.status == "cancelled":
                final["error"] = None
        if response.get("status") != final.get("status"):
            await self.store.set_response(record.id, final)  # outlives the job's retention
        return final

    async def retrieve(self, principal: Principal, response_id: str) -> JsonObject:
        return await self.current(principal, await self._own(principal, response_id))

    async def follow(self, principal: Principal, response_id: str,
                     after: int | None = None) -> AsyncIterator[Event | JsonObject]:
        """A background response's stream events after sequence number ``after``, live until
        it ends; raises here (before any event) when there is nothing to follow."""
        record = await self._own(principal, response_id)
        if record.job_id is None:
            raise InvalidRequest("Only background responses can be streamed again.",
                                 param="stream")
        jobs = self._jobs()  # checked before the stream starts
        return self._follow(principal, record, jobs, -1 if after is None else after)

    async def _follow(self, principal: Principal, record: ResponseRecord, jobs: BackgroundJobs,
                      after: int) -> AsyncIterator[Event | JsonObject]:
        """Events numbered from 0 as OpenAI's are: the job's event number less ``FIRST_SEQ``
        (a later attempt's events follow the earlier one's, with higher numbers). An event
        read back from the job's log is the JSON object it was stored as."""
        assert record.job_id is not None
        last_seq, last_type = after, ""
        async for seq, kind, data in jobs.events(principal, record.job_id,
                                                 max(after + FIRST_SEQ, 0)):
            if seq is not None and kind == EVENT_KIND:
                stored: JsonObject = orjson.loads(data)
                event: JsonObject = {**stored, "sequence_number": seq - FIRST_SEQ}
                last_seq, last_type = seq - FIRST_SEQ, str(event.get("type", ""))
                yield event
            elif seq is None and kind != "status" and last_type not in TERMINAL_EVENTS:
                final = await self.current(principal, record)
                if final.get("status") in ("completed", "incomplete"):
                    return  # its closing event was read before ``after``
                error = final.get("error")
                failed = failed_event(final, error if isinstance(error, dict) else {},
                                      str(final["status"]))
                failed["sequence_number"] = last_seq + 1
                yield failed

    # -- change -----------------------------------------------------------------------------
    async def cancel(self, principal: Principal, response_id: str) -> JsonObject:
        record = await self._own(principal, response_id)
        if record.job_id is None:
            raise InvalidRequest("Only background responses can be cancelled.",
                                 param="response_id", code="not_background")
        with contextlib.suppress(Conflict):  # already finished: answer its final state
            await self._jobs().cancel(principal, record.job_id)
        return await self.current(principal, record)

    async def delete(self, principal: Principal, response_id: str) -> Deleted:
        record = await self._own(principal, response_id)
        if record.job_id is not None and self.jobs is not None:
            with contextlib.suppress(NotFound):
                await self.jobs.delete(principal, record.job_id)
        await self.store.delete(record.id)
        return {"id": record.id, "object": "response", "deleted": True}

    async def input_items(self, principal: Principal, response_id: str, *, limit: int = 20,
                          order: str = "desc", after: str | None = None) -> ItemPage:
        record = await self._own(principal, response_id)
        items = list(record.input_items)
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [item.get("id") for item in items]
            items = items[ids.index(after) + 1:] if after in ids else []
        return item_page(items[:limit], len(items) > limit)


async def _numbered(events: AsyncGenerator[Event]) -> AsyncIterator[Event]:
    seq = 0
    async with contextlib.aclosing(events):  # a client that leaves stops the generation
        async for event in events:
            numbered = event.copy()
            numbered["sequence_number"] = seq
            yield numbered
            seq += 1


def _chain_key(first: ResponseRecord) -> str | None:
    """The routing key the first response of a chain had by its prompt's head (its
    instructions and first input item)."""
    items = first.history if first.history is not None else first.input_items
    try:
        messages = items_to_messages(list(items))
    except InferdError:
        return None
    instructions = (first.response or {}).get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.insert(0, {"role": "system", "content": instructions})
    return chat_head_key(messages)
