"""A background response as a durable job: the job's request holds the translated chat
request and the Response object so far; its events are the typed stream events, numbered by
the job's event log, so a stream resumes from any sequence number. The log numbers from 1 and
an attempt's first event is its ``running`` status, so a response's first event is the job's
event ``FIRST_SEQ``: streams number the events from 0 (OpenAI's numbering) by that offset."""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from inferd.auth.principal import Principal
from inferd.inference import Inference
from inferd.jsontypes import JsonObject
from inferd.responses.conversations import stored_items
from inferd.responses.events import Event, ResponseStream
from inferd.schemas.answers import Usage
from inferd.schemas.openai import ChatCompletionRequest, StreamOptions
from inferd.schemas.responses import output_items
from inferd.store.conversations import ConversationStore
from inferd.store.responses import ResponseStore

ENDPOINT = "/v1/responses"
EVENT_KIND = "response"
FIRST_SEQ = 2


class ResponseJob(BaseModel):
    """What a background response's job stores."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1)
    chat: JsonObject  # the chat request, as dumped (validated when it runs)
    response: JsonObject
    conversation: str | None = None  # its output items are added to it at the end


class EventSink(Protocol):
    async def add(self, kind: str, data: Event) -> None: ...

    async def flush(self) -> None: ...


async def run_response(inference: Inference, job: ResponseJob, principal: Principal,
                       events: EventSink, responses: ResponseStore
                       ) -> tuple[JsonObject, Usage | None]:
    """Generate the response, storing its events; ``(response object, chat usage)``.

    The finished object is also written to the response's row, so that it outlives the job
    (finished jobs are purged after their retention time).
    """
    chat = ChatCompletionRequest.model_validate(job.chat).model_copy(
        update={"stream": True, "stream_options": StreamOptions(include_usage=True)})
    state = ResponseStream(job.response)
    for event in state.start():
        await events.add(EVENT_KIND, event)
    await events.flush()  # followers see the response start before the first token
    stream = await inference.chat_stream(chat, principal)
    async for chunk in stream:
        for event in state.feed(chunk):
            await events.add(EVENT_KIND, event)
    for event in state.finish():
        await events.add(EVENT_KIND, event)
    await events.flush()
    await responses.set_response(str(state.response["id"]), state.response)
    if job.conversation is not None:
        await ConversationStore(responses.db).add_items(
            job.conversation, stored_items(output_items(state.response)))
    return state.response, state.usage
