"""Fast JSON responses (orjson)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import orjson
from starlette.responses import Response

from inferd.jsontypes import JsonObject
from inferd.schemas.answers import Answer

if TYPE_CHECKING:
    from inferd.jobs.batches import BatchObject, FileObject
    from inferd.jobs.requests import JobObject

    # What a list endpoint pages: objects with an ``id`` (a conversation's items are JSON).
    Listed: TypeAlias = JobObject | BatchObject | FileObject | JsonObject


def json_response(content: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json",
                    headers=headers)


def answer_response(answer: Answer) -> Response:
    """A typed answer as it goes on the wire: the fields it was built or received with."""
    return Response(answer.wire_json(), media_type="application/json")


def page_response(data: Sequence[Listed], has_more: bool) -> Response:
    """One page of a cursor-paginated list, as OpenAI's list endpoints answer it (the next
    page starts ``after`` the ``last_id``)."""
    return json_response({"object": "list", "data": data,
                          "first_id": data[0]["id"] if data else None,
                          "last_id": data[-1]["id"] if data else None,
                          "has_more": has_more})
