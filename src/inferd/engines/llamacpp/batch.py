"""Continuous batching: one thread per model runs every request's sequence on one context.

Each step decodes one ``llama_batch`` with the last sampled token of every running sequence,
then chunks of the prompts still being read (each in its own decode), up to ``n_batch`` prompt
tokens a step, so a long prompt does not stall running streams. Requests join and leave between
steps. The context is created with ``kv_unified=false``: each sequence owns ``n_ctx`` cells of
its own, and greedy output is token-for-token identical to running the prompt alone. llama.cpp
then decodes sequences with consecutive ids together and the others in further passes over the
weights (``seats.runs``): of equal choices, a request takes the free slot that keeps the running
ids contiguous.

A sequence slot keeps its KV cells after its request ends, until a request needs the slot: the
prompt cache. A request that may use it (``cache_prompt``) reads only what no free slot holds
already; ``seats.choose_seat`` picks the slot: the one sharing the longest prefix with the
prompt when the request continues what it holds, else an empty slot or the least recently used
one, into which a long shared prefix (a system prompt) is copied first, so one conversation does
not evict another's cells for a few tokens of the chat template's head.

The choices of an ``n > 1`` request share one prompt: the first (the leader) carries the others
as ``followers``. The leader reads the prompt; each follower that got a free slot beside it then
receives a copy of the leader's KV cells (``llama_memory_seq_cp``, a copy of the whole stream
since every sequence has its own) and samples its first token from the same logits with its own
sampler chain. A follower that found no free slot waits and reads the prompt itself.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import llama_cpp

from inferd.engines.base import LogprobEntry, TopLogprobEntry
from inferd.engines.llamacpp.sampling import (
    SamplerChain,
    SamplingParams,
    StopFinder,
    TokenText,
    Utf8Guard,
    invalid_utf8_tokens,
    token_logprobs,
)
from inferd.engines.llamacpp.seats import choose_seat
from inferd.errors import InvalidRequest

log = logging.getLogger(__name__)

# What the engine thread hands back: ("piece", (text, logprob entries)), ("done", None) or
# ("error", exception).
Event = tuple[str, Any]


@dataclass
class SeqRequest:
    """One sequence to generate; outcome fields are written by the engine thread."""

    prompt: list[int]
    params: SamplingParams
    max_tokens: int
    stops: list[str]
    emit: Callable[[Event], object]
    stream: bool = True
    logprobs: int | None = None  # None: no logprobs; else how many top alternatives
    cache_prompt: bool = False
    cancelled: threading.Event = field(default_factory=threading.Event)
    followers: list[SeqRequest] = field(default_factory=list)  # other choices of the prompt
    completion_tokens: int = 0
    cached_tokens: int = 0
    finish_reason: str | None = None


@dataclass
class _Slot:
    seq: int
    cells: list[int] = field(default_factory=list)  # tokens whose KV this sequence holds
    request: SeqRequest | None = None
    chain: SamplerChain | None = None
    decoder: TokenText | None = None
    stopper: StopFinder | None = None
    read: int = 0  # prompt tokens already in the KV cache
    last: int = -1  # sampled token not yet decoded
    kept: list[str] = field(default_factory=list)
    entries: list[LogprobEntry] = field(default_factory=list)
    followers: list[_Slot] = field(default_factory=list)  # slots waiting for this prompt's KV
    leader: _Slot | None = None  # the slot whose prompt KV this one waits for
    used: int = 0  # when a request last took or left it (a counter; 0: never)


class BatchLoop:
    """Owns a llama.cpp context with ``parallel`` sequences and the thread that drives it."""

    def __init__(self, model: Any, *, parallel: int, n_ctx_seq: int, n_batch: int,
                 n_threads: int, cache_prompt: bool = True,
                 n_ubatch: int | None = None) -> None:
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx_seq * parallel
        params.n_batch = n_batch
        # rows computed in one pass; a decode of more is split (``n_ubatch``: a smaller cap)
        params.n_ubatch = min(n_batch, n_ubatch or n_batch)
        params.n_seq_max = parallel
        params.n_threads = params.n_threads_batch = n_threads
        params.kv_unified = False
        # Flash attention: a decode step of 8 sequences ~1.1x faster on this CPU build (see
        # README, engine figures); greedy output stays the same alone and inside a batch.
        params.flash_attn = True
        params.no_perf = True
        self.ctx = llama_cpp.llama_init_from_model(model, params)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create a context")
        self.vocab = llama_cpp.llama_model_get_vocab(model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.utf8 = Utf8Guard(self.vocab, self.n_vocab)
        self.invalid_utf8 = invalid_utf8_tokens(self.utf8.pieces)
        # what llama.cpp gave each sequence (it may round the context up)
        self.n_ctx_seq = llama_cpp.llama_n_ctx(self.ctx) // parallel
        self.n_batch = n_batch
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self.slots = [_Slot(seq) for seq in range(parallel)]
        self.inbox: queue.Queue[SeqRequest | None] = queue.Queue()
        self.waiting: collections.deque[SeqRequest] = collections.deque()
        self.prompt_tokens_read = 0  # prompt tokens decoded since start (not cached or copied)
        # Whether requests may reuse the cells other requests left (each may still decline).
        self.cache_prompt = cache_prompt
        self.cached_tokens = 0  # prompt tokens found cached since start
        self.prefix_copies = 0  # shared prefixes copied from one slot to another
        self.clock = 0  # counts slots taken and left: the order of ``_Slot.used``
        self.thread = threading.Thread(target=self._run, name="llama-batch", daemon=True)
        self.thread.start()

    def submit(self, request: SeqRequest) -> None:
        self.inbox.put(request)

    def close(self) -> None:
        self.inbox.put(None)
        self.thread.join()
        for slot in self.slots:
            if slot.request is not None:
                self._finish(slot, "stop")
        llama_cpp.llama_batch_free(self.batch)
        llama_cpp.llama_free(self.ctx)
        self.ctx = None

    # -- the loop -------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            running = any(s.request is not None for s in self.slots)
            try:
                item = self.inbox.get(block=not running and not self.waiting)
                while True:
                    if item is None:
                        return
                    self.waiting.append(item)
                    item = self.inbox.get_nowait()
            except queue.Empty:
                pass
            self._admit()
            if any(s.request is not None for s in self.slots):
                try:
                    self._step()
                except Exception as exc:  # one failed decode fails the requests in it
                    log.exception("llama.cpp decode failed")
                    for slot in self.slots:
                        if slot.request is not None:
                            slot.request.emit(("error", exc))
                            self._release(slot)
                            slot.cells = []
                            llama_cpp.llama_memory_seq_rm(self.memory, slot.seq, -1, -1)

    def _admit(self) -> None:
        while self.waiting:
            request = self.waiting[0]
            if request.cancelled.is_set():
                self.waiting.popleft()
                request.emit(("done", None))
                continue
            free = [s for s in self.slots if s.request is None]
            if not free:
                return
            self.waiting.popleft()
            slot = self._start(request, free)
            followers, request.followers = collections.deque(request.followers), []
            while slot is not None and followers:
                free = [s for s in self.slots if s.request is None]
                if not free:
                    break
                self._follow(followers.popleft(), slot, free)
            # Choices without a slot (or whose leader failed) read the prompt themselves.
            self.waiting.extendleft(reversed(followers))

    def _start(self, request: SeqRequest, free: list[_Slot]) -> _Slot | None:
        """Give ``request`` a free slot; None when its sampler could not be built."""
        running = {s.seq for s in self.slots if s.request is not None}
        # A request that declines the cache reuses nothing, yet leaves others' cells alone.
        seat = choose_seat(free, running, request.prompt if request.cache_prompt else [],
                           self.cache_prompt)
        if seat.source is not None:
            # Different streams: the copy is of the whole stream (done at the next decode),
            # then cut to the shared prefix.
            llama_cpp.llama_memory_seq_cp(self.memory, seat.source.seq, seat.slot.seq, -1, -1)
            seat.slot.cells = list(seat.source.cells)
            self.prefix_copies += 1
        return seat.slot if self._occupy(seat.slot, request, seat.keep) else None

    def _follow(self, request: SeqRequest, leader: _Slot, free: list[_Slot]) -> None:
        """Seat a follower; it decodes nothing until the leader's prompt KV is copied to it."""
        running = {s.seq for s in self.slots if s.request is not None}
        slot = choose_seat(free, running, [], self.cache_prompt).slot  # the victim's
        if self._occupy(slot, request, 0):
            slot.leader = leader
            leader.followers.append(slot)

    def _occupy(self, slot: _Slot, request: SeqRequest, keep: int) -> bool:
        """Seat ``request`` in ``slot`` keeping ``keep`` cached cells; False if it failed."""
        llama_cpp.llama_memory_seq_rm(self.memory, slot.seq, keep, -1)
        slot.cells = slot.cells[:keep]
        request.cached_tokens = keep
        self.cached_tokens += keep
        self.clock += 1
        slot.used = self.clock
        slot.request, slot.read, slot.last = request, keep, -1
        slot.kept, slot.entries = [], []
        slot.decoder = TokenText(self.vocab)
        slot.stopper = StopFinder(request.stops)
        try:
            slot.chain = SamplerChain(self.vocab, self.n_vocab, request.params,
                                      self.invalid_utf8, self.utf8)
        except Exception as exc:
            request.emit(("error", exc))
            self._release(slot)
            return False
        return True

    def _add(self, token: int, pos: int, seq: int, logits: bool) -> int:
        b, i = self.batch, self.batch.n_tokens
        b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, logits
        b.seq_id[i][0] = seq
        b.n_tokens = i + 1
        return int(i)

    def _step(self) -> None:
        """One decode of every running sequence's next token, then prompt chunks.

        Each prompt chunk is decoded in a call of its own: with one KV stream per sequence,
        llama.cpp splits a batch into micro-batches holding the same number of tokens of every
        sequence, so a prompt beside one-token decodes would be read one token at a time. Alone,
        a prompt is also read exactly as it would be with nothing else running.
        """
        self.batch.n_tokens = 0
        rows: list[tuple[_Slot, int]] = []
        for slot in self.slots:
            request = slot.request
            if request is None:
                continue
            if request.cancelled.is_set():
                self._finish(slot, "stop")
            elif slot.last >= 0:
                rows.append((slot, self._add(slot.last, len(slot.cells), slot.seq, True)))
                slot.cells.append(slot.last)
        self._decode(rows)
        # Prompt tokens read per step, so a long prompt does not stall running streams.
        budget = self.n_batch
        for slot in self.slots:
            request = slot.request
            if request is None or slot.last >= 0 or slot.leader is not None or budget <= 0:
                continue
            self.batch.n_tokens = 0
            chunk = request.prompt[slot.read:slot.read + budget]
            rows = []
            for offset, token in enumerate(chunk):
                last = slot.read + offset == len(request.prompt) - 1
                index = self._add(token, slot.read + offset, slot.seq, last)
                if last:
                    rows.append((slot, index))
            slot.read += len(chunk)
            slot.cells.extend(chunk)
            self.prompt_tokens_read += len(chunk)
            budget -= len(chunk)
            self._decode(rows)

    def _decode(self, rows: list[tuple[_Slot, int]]) -> None:
        """Decode the batch, then sample the sequences whose logits it computed."""
        if not self.batch.n_tokens:
            return
        status = llama_cpp.llama_decode(self.ctx, self.batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")
        for slot, index in rows:
            for follower in slot.followers:
                self._copy_prompt(slot, follower, index)
            slot.followers = []
            self._sampled(slot, index)

    def _copy_prompt(self, leader: _Slot, follower: _Slot, index: int) -> None:
        """The leader's prompt is read: the follower gets its KV cells and its first token."""
        follower.leader = None
        assert follower.request is not None  # a follower that ends leaves its leader's list
        # Different streams: the copy is of the whole stream (done at the next decode).
        llama_cpp.llama_memory_seq_cp(self.memory, leader.seq, follower.seq, -1, -1)
        follower.cells = list(leader.cells)
        follower.read = len(follower.request.prompt)
        self._sampled(follower, index)

    def _sampled(self, slot: _Slot, index: int) -> None:
        request, chain = slot.request, slot.chain
        assert request is not None and chain is not None and slot.stopper is not None
        assert slot.decoder is not None
        token = chain.sample(self.ctx, index)
        if token is None:  # the grammar allows no token of the vocabulary here
            request.emit(("error", InvalidRequest(
                "The answer cannot go on within the request's schema or grammar: it asks "
                "for text that no token of this model can write (for example a character "
                "the model's vocabulary does not hold).", code="schema_unsatisfiable")))
            self._release(slot)
            return
        if llama_cpp.llama_vocab_is_eog(self.vocab, token):
            self._finish(slot, "stop")
            return
        request.completion_tokens += 1
        entry = None
        if request.logprobs is not None:
            entry = self._entry(slot.decoder, index, token, request.logprobs)
        text, stopped = slot.stopper.feed(slot.decoder.text(token))
        if text or (entry is not None and not stopped):
            self._emit(slot, text, [entry] if entry is not None else [])
        if stopped:
            self._finish(slot, "stop")
        elif (request.completion_tokens >= request.max_tokens
              or len(slot.cells) >= self.n_ctx_seq):
            self._finish(slot, "length")
        else:
            slot.last = token

    def _entry(self, decoder: TokenText, index: int, token: int, top: int) -> LogprobEntry:
        logprob, best = token_logprobs(self.ctx, index, self.n_vocab, token, top)

        def shaped(tok: int, lp: float) -> TopLogprobEntry:
            raw = decoder.piece(tok)
            return {"token": raw.decode("utf-8", errors="replace"), "logprob": lp,
                    "bytes": list(raw)}

        mine = shaped(token, logprob)
        return {"token": mine["token"], "logprob": mine["logprob"], "bytes": mine["bytes"],
                "top_logprobs": [shaped(t, lp) for t, lp in best]}

    def _emit(self, slot: _Slot, text: str, entries: list[LogprobEntry]) -> None:
        request = slot.request
        assert request is not None
        if request.stream:
            request.emit(("piece", (text, entries)))
        else:
            slot.kept.append(text)
            slot.entries.extend(entries)

    def _finish(self, slot: _Slot, reason: str) -> None:
        request = slot.request
        assert request is not None
        rest = slot.stopper.flush() if slot.stopper is not None else ""
        if rest or not request.stream:
            self._emit(slot, rest, [])
        if not request.stream:
            request.emit(("piece", ("".join(slot.kept), slot.entries)))
        request.finish_reason = reason
        request.emit(("done", None))
        self._release(slot)

    def _release(self, slot: _Slot) -> None:
        for follower in slot.followers:  # the leader ended before its prompt was read
            follower.leader = None
        if slot.leader is not None:
            slot.leader.followers.remove(slot)
        slot.followers, slot.leader = [], None
        if slot.chain is not None:
            slot.chain.close()
        slot.request, slot.chain, slot.decoder, slot.stopper = None, None, None, None
        slot.last, slot.kept, slot.entries = -1, [], []
        self.clock += 1
        slot.used = self.clock
