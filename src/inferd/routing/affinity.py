"""Which replica a request belongs on: its routing key and the rendezvous ranking of replicas.

A model routed by ``prefix`` sends each request to the replica that most likely holds its
prompt's beginning in its KV cache. The request's *key* is, in this order:

1. an explicit session: the ``x-session-id`` header, a ``session_id`` field in the body (or
   OpenAI's ``prompt_cache_key``), the Responses API's ``conversation``, or the first response
   of a ``previous_response_id`` chain;
2. the ``user`` field;
3. its prompt's head: for a chat, the system messages and the first other message (what every
   later turn of the conversation starts with), at most ``PREFIX_CHARS`` characters of them; for
   a text completion, its first ``PREFIX_CHARS`` characters.

The key is hashed with each available replica's id (rendezvous, or highest-random-weight,
hashing); the replicas ranked by that score are the same in every gateway, with no shared state,
and a replica joining or leaving moves only the keys it wins or won. ``bounded`` then takes the
first replica of the ranking whose requests in flight stay within ``(1 + spill) x`` its weighted
share of the model's plus ``slack`` (consistent hashing with bounded loads; the slack keeps a
few requests, which an engine batches at little cost, from spilling to a replica where the
prompt must be read whole again).
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

# Characters of a prompt's head that make its key: ~1,000 tokens of English, enough to tell
# apart conversations that share a long system prompt by their first message, cheap to hash.
PREFIX_CHARS = 4096
_MAX64 = float(2**64)
_MASK = 2**64 - 1


class Ranked(Protocol):
    id: str
    weight: float
    in_flight: int


RankedT = TypeVar("RankedT", bound=Ranked)


def session_key(session: str | None) -> str | None:
    """The routing key of an explicit session (None: no session)."""
    return "s\0" + session if session else None


def routing_key(request: Any) -> str | None:
    """The request's routing key (see the module docstring), None when it has none. A key
    given outside the body (the request's private ``_route``) comes first."""
    # a pydantic model keeps its private attributes in ``__pydantic_private__``: read there,
    # the attribute lookup of ``_route`` alone costs about as much as the rest of the key
    private = getattr(request, "__pydantic_private__", None)
    given = private.get("_route") if private is not None else getattr(request, "_route", None)
    if given:
        return str(given)
    extra = getattr(request, "__pydantic_extra__", None)
    if extra:
        for name in ("session_id", "prompt_cache_key"):
            session = extra.get(name)
            if isinstance(session, str) and session:
                return "s\0" + session
    user = getattr(request, "user", None)
    if isinstance(user, str) and user:
        return "u\0" + user
    messages = getattr(request, "messages", None)
    if messages is not None:
        return _chat_head(messages)
    prompt = getattr(request, "prompt", None)
    if isinstance(prompt, str):
        return "p\0" + prompt[:PREFIX_CHARS]
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        return "p\0" + prompt[0][:PREFIX_CHARS]
    if isinstance(prompt, list) and prompt:  # token ids
        head = prompt[0] if isinstance(prompt[0], list) else prompt
        return "t\0" + ",".join(str(t) for t in head[: PREFIX_CHARS // 4])
    return None


def chat_head_key(messages: Sequence[Any]) -> str | None:
    """The key of a chat's messages (objects with ``role`` and ``content``, or dicts)."""
    return _chat_head(messages)


def _chat_head(messages: Sequence[Any]) -> str | None:
    parts = ["c"]
    size = 0
    for message in messages:
        if isinstance(message, dict):
            role, content = str(message.get("role")), message.get("content")
        else:
            role, content = message.role, message.content
        text = content if type(content) is str else _text(content)
        parts += (role, text)
        size += len(text) + len(role) + 2
        if size >= PREFIX_CHARS or (role != "system" and role != "developer"):
            break
    if len(parts) == 1:
        return None
    # "c\0" and each message's "role\0text\0", at most PREFIX_CHARS after the "c\0"
    return ("\0".join(parts) + "\0")[:PREFIX_CHARS + 2]


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:  # text parts; an image or audio part counts by its type only
        text = part.get("text") if isinstance(part, dict) else getattr(part, "text", None)
        kind = part.get("type") if isinstance(part, dict) else getattr(part, "type", "")
        texts.append(text if isinstance(text, str) else f"[{kind}]")
    return "".join(texts)


def digest(key: str) -> int:
    """The key hashed once per request (64 bits)."""
    data = key.encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


# Module-level on purpose: a bounded memo of a pure function of the replica id (allowed in
# tests/unit/test_module_state.py); every router of the process computes the same values.
@functools.lru_cache(maxsize=4096)
def _id_hash(replica_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(replica_id.encode(), digest_size=8).digest(), "big")


def _mix(x: int) -> int:
    """SplitMix64's finalizer: every bit of ``x`` flips each bit of the result at random."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def score(key_digest: int, replica_id: str, weight: float = 1.0) -> float:
    """The rendezvous score of a replica for a key: the highest wins. Weighted so that a
    replica of weight ``w`` wins ``w / sum(w)`` of the keys (-w / ln(u), u uniform in (0, 1))."""
    u = (_mix(key_digest ^ _id_hash(replica_id)) + 0.5) / _MAX64
    return -weight / math.log(u)


def rank(key_digest: int, replicas: Sequence[RankedT]) -> list[RankedT]:
    """``replicas`` best first for the key; every gateway ranks them alike."""
    return sorted(replicas, key=lambda r: (-score(key_digest, r.id, r.weight), r.id))


def _in_flight(replica: Ranked) -> float:
    return replica.in_flight


def bounded(key_digest: int, replicas: Sequence[RankedT], spill: float, slack: int = 0,
            load: Callable[[RankedT], float] = _in_flight) -> RankedT:
    """The first replica of the key's ranking that is within its load bound: with ``m``
    requests on the model's replicas of total weight ``W`` (each replica's ``load``: its
    requests in flight, or the load its engine reports), a replica of weight ``w`` takes the
    request while ``load + 1 <= ceil((1 + spill) * (m + 1) * w / W) + slack``.
    The bounds add up to at least ``m + 1``, so one always takes it."""
    loads = [load(r) for r in replicas]
    share = (1 + spill) * (sum(loads) + 1) / sum([r.weight for r in replicas])
    scores = [score(key_digest, r.id, r.weight) for r in replicas]
    # the key's replica (the highest score; ties by id), most of the time within its bound
    order = range(len(replicas))
    best = min(order, key=lambda i: (-scores[i], replicas[i].id))
    if loads[best] + 1 <= math.ceil(share * replicas[best].weight) + slack:
        return replicas[best]
    ranked = sorted(order, key=lambda i: (-scores[i], replicas[i].id))  # only on a spill
    for i in ranked:
        if loads[i] + 1 <= math.ceil(share * replicas[i].weight) + slack:
            return replicas[i]
    # unreachable in theory (the bounds add up to at least m + 1)
    return replicas[min(ranked, key=lambda i: (loads[i] + 1) / replicas[i].weight)]
