"""Per-sequence sampling: a llama.cpp sampler chain, logprobs, and stop strings.

Every sequence of the batch owns its chain (its seed, its grammar, its penalties), so requests
that share a decode step never share sampling state.
"""

from __future__ import annotations

import codecs
import ctypes
import math
import random
from dataclasses import dataclass, field, replace
from typing import Any

import llama_cpp
import numpy as np

# llama.cpp's server looks this far back for the repetition penalties.
PENALTY_LAST_N = 64


@dataclass
class SamplingParams:
    """What a request asks of the sampler; built by the engine from the OpenAI fields."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    logit_bias: dict[int, float] = field(default_factory=dict)
    grammar: str | None = None  # GBNF, root rule "root"

    def seeded(self, seed: int | None) -> SamplingParams:
        """The same settings with another seed (each choice of ``n`` has its own)."""
        return replace(self, seed=seed)


def grammar_error(vocab: Any, grammar: str) -> str | None:
    """Parse a GBNF grammar the way the sampler will; the reason it fails, or None."""
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    if not sampler:
        return "the grammar does not parse"
    llama_cpp.llama_sampler_free(sampler)
    return None


# Bytes that never stand in UTF-8 text: C0 and C1 would encode a character of one byte in two,
# F5..FF a code point past U+10FFFF. llama.cpp's grammars read such bytes as characters (so
# C0 A2 would pass for a '"'), and the text they make decodes to U+FFFD: tokens holding one are
# never sampled under a grammar (``invalid_utf8_tokens``).
INVALID_UTF8_BYTES = frozenset({0xC0, 0xC1, *range(0xF5, 0x100)})


def invalid_utf8_tokens(pieces: list[bytes]) -> np.ndarray[Any, Any]:
    """The ids of the tokens (``pieces``: each token's bytes) holding a byte of
    ``INVALID_UTF8_BYTES``."""
    banned = [token for token, piece in enumerate(pieces)
              if not INVALID_UTF8_BYTES.isdisjoint(piece)]
    return np.array(banned, dtype=np.int64)


# Where a UTF-8 text stands after some bytes: continuation bytes still wanted, and the range
# the next one must fall in (E0, ED, F0 and F4 narrow it: no overlong form, no surrogate, nothing
# past U+10FFFF). (0, 0, 0): between two characters.
Utf8State = tuple[int, int, int]
UTF8_BOUNDARY: Utf8State = (0, 0, 0)


def utf8_step(state: Utf8State, data: bytes) -> Utf8State | None:
    """``state`` after ``data``; None when ``data`` cannot follow in valid UTF-8."""
    need, lo, hi = state
    for b in data:
        if need:
            if not lo <= b <= hi:
                return None
            need, lo, hi = need - 1, 0x80, 0xBF
        elif b < 0x80:
            continue
        elif 0xC2 <= b <= 0xDF:
            need, lo, hi = 1, 0x80, 0xBF
        elif 0xE0 <= b <= 0xEF:
            need, lo, hi = 2, (0xA0 if b == 0xE0 else 0x80), (0x9F if b == 0xED else 0xBF)
        elif 0xF0 <= b <= 0xF4:
            need, lo, hi = 3, (0x90 if b == 0xF0 else 0x80), (0x8F if b == 0xF4 else 0xBF)
        else:
            return None
    return (need, lo, hi) if need else UTF8_BOUNDARY


class Utf8Guard:
    """Which tokens may come next so that the text stays valid UTF-8, by where it stands.

    llama.cpp's grammars decode UTF-8 without checking it: an overlong form (F0 8F BF BF), a
    lead byte followed by no continuation byte, pass for one character, and the text decodes
    to several U+FFFD (a string past its ``maxLength``). Under a grammar, a token that would
    make the text invalid is not sampled wherever the grammar leaves another token (it is
    applied after the grammar, and only then; a text the engine did not sample, such as a
    forced prefix, is not followed, so the state may lag behind it). The refused tokens of
    each state are worked out the first time the state is met (a handful of states; one pass
    over the vocabulary each, whose pieces are read once).
    """

    def __init__(self, vocab: Any, n_vocab: int) -> None:
        text = TokenText(vocab)
        self.pieces = [text.piece(token) for token in range(n_vocab)]
        self._refused: dict[Utf8State, np.ndarray[Any, Any]] = {}

    def refused(self, state: Utf8State) -> np.ndarray[Any, Any]:
        found = self._refused.get(state)
        if found is None:
            found = np.array([token for token, piece in enumerate(self.pieces)
                              if utf8_step(state, piece) is None], dtype=np.int64)
            self._refused[state] = found
        return found

    def after(self, state: Utf8State, token: int) -> Utf8State:
        return utf8_step(state, self.pieces[token]) or UTF8_BOUNDARY


# llama.cpp's ``llama_token_data``: a candidate token, its logit and its probability.
_CANDIDATE = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)


class SamplerChain:
    """A llama.cpp sampler chain; freed with ``close`` (the chain owns its samplers).

    A grammar is not one of the chain's samplers: it is applied first and on its own, so that
    a grammar which allows no token of the vocabulary at some point (a schema asking for a
    character no token can spell) is seen before a token is accepted. llama.cpp would accept
    a token the grammar refused and abort the process (``std::runtime_error`` thrown through
    the C API); here ``sample`` answers None instead.
    """

    def __init__(self, vocab: Any, n_vocab: int, params: SamplingParams,
                 banned: np.ndarray[Any, Any] | None = None,
                 utf8: Utf8Guard | None = None) -> None:
        self.chain = llama_cpp.llama_sampler_chain_init(
            llama_cpp.llama_sampler_chain_default_params())
        self.grammar: Any = None
        self.n_vocab = n_vocab
        # tokens never sampled under the grammar (``invalid_utf8_tokens``)
        self.banned = banned if banned is not None and len(banned) else None
        # under the grammar, the text kept valid UTF-8 token by token (``Utf8Guard``)
        self.utf8 = utf8
        self.utf8_state = UTF8_BOUNDARY
        # The ctypes array handed to the logit-bias sampler must outlive this call.
        self._keep: list[Any] = []
        self._candidates: np.ndarray[Any, Any] | None = None
        try:
            if params.grammar is not None:
                self.grammar = llama_cpp.llama_sampler_init_grammar(
                    vocab, params.grammar.encode(), b"root")
                if not self.grammar:
                    raise ValueError("llama.cpp refused a sampler")
                self._candidates = np.zeros(n_vocab, dtype=_CANDIDATE)
                self._candidates["id"] = np.arange(n_vocab, dtype=np.int32)
            self._build(vocab, n_vocab, params)
        except Exception:
            self.close()
            raise

    def _add(self, sampler: Any) -> None:
        if not sampler:
            raise ValueError("llama.cpp refused a sampler")
        llama_cpp.llama_sampler_chain_add(self.chain, sampler)

    def _build(self, vocab: Any, n_vocab: int, p: SamplingParams) -> None:
        if p.logit_bias:
            array = (llama_cpp.llama_logit_bias * len(p.logit_bias))(
                *[llama_cpp.llama_logit_bias(token, bias) for token, bias in p.logit_bias.items()])
            self._keep.append(array)
            self._add(llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(p.logit_bias), array))
        if p.repeat_penalty != 1.0 or p.presence_penalty or p.frequency_penalty:
            self._add(llama_cpp.llama_sampler_init_penalties(
                PENALTY_LAST_N, p.repeat_penalty, p.frequency_penalty, p.presence_penalty))
        if p.temperature <= 0.0:
            self._add(llama_cpp.llama_sampler_init_greedy())
            return
        if p.top_k > 0:
            self._add(llama_cpp.llama_sampler_init_top_k(p.top_k))
        if p.typical_p < 1.0:
            self._add(llama_cpp.llama_sampler_init_typical(p.typical_p, 1))
        if p.top_p < 1.0:
            self._add(llama_cpp.llama_sampler_init_top_p(p.top_p, 1))
        if p.min_p > 0.0:
            self._add(llama_cpp.llama_sampler_init_min_p(p.min_p, 1))
        self._add(llama_cpp.llama_sampler_init_temp(p.temperature))
        seed = random.getrandbits(32) if p.seed is None else p.seed & 0xFFFFFFFF
        self._add(llama_cpp.llama_sampler_init_dist(seed))

    def sample(self, ctx: Any, index: int) -> int | None:
        """Pick the next token from the logits at ``index`` of the last batch (and accept it);
        None when the grammar allows no token at all (nothing is accepted then)."""
        if self.grammar is None:
            return int(llama_cpp.llama_sampler_sample(self.chain, ctx, index))
        # What llama_sampler_sample does, with the grammar applied first and checked: every
        # candidate the grammar refuses gets a logit of -inf, and the later samplers never
        # make such a logit finite again (a bias added to -inf is -inf).
        candidates = self._candidates
        assert candidates is not None
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, index),
                                       shape=(self.n_vocab,))
        candidates["logit"] = logits
        candidates["p"] = 0.0
        if self.banned is not None:
            candidates["logit"][self.banned] = -np.inf
        array = llama_cpp.llama_token_data_array(
            data=candidates.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data)),
            size=self.n_vocab, selected=-1, sorted=False)
        llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(array))
        if not np.isfinite(candidates["logit"]).any():
            return None
        if self.utf8 is not None:
            # after the grammar, and only where some token it allows is left
            refused = self.utf8.refused(self.utf8_state)
            if len(refused):
                kept = candidates["logit"][refused]
                candidates["logit"][refused] = -np.inf
                if not np.isfinite(candidates["logit"]).any():
                    candidates["logit"][refused] = kept
        llama_cpp.llama_sampler_apply(self.chain, ctypes.byref(array))
        if not 0 <= array.selected < array.size:
            return None
        chosen = array.data[array.selected]
        if not math.isfinite(chosen.logit):
            return None
        token = int(chosen.id)
        llama_cpp.llama_sampler_accept(self.grammar, token)
        llama_cpp.llama_sampler_accept(self.chain, token)
        if self.utf8 is not None:
            self.utf8_state = self.utf8.after(self.utf8_state, token)
        return token

    def close(self) -> None:
        if self.chain:
            llama_cpp.llama_sampler_free(self.chain)
            self.chain = None
        if self.grammar:
            llama_cpp.llama_sampler_free(self.grammar)
            self.grammar = None
        self._candidates = None
        self._keep.clear()


def token_logprobs(ctx: Any, index: int, n_vocab: int, token: int,
                   top: int) -> tuple[float, list[tuple[int, float]]]:
    """Log-probability of ``token`` under the model, and the ``top`` most likely tokens."""
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, index), shape=(n_vocab,))
    shifted = logits.astype(np.float64) - float(logits.max())
    log_total = math.log(float(np.exp(shifted).sum()))
    logprobs = shifted - log_total
    best: list[tuple[int, float]] = []
    if top > 0:
        ids = np.argpartition(-logprobs, top)[:top]
        ids = ids[np.argsort(-logprobs[ids])]
        best = [(int(i), float(logprobs[i])) for i in ids]
    return float(logprobs[token]), best


class TokenText:
    """Token ids to text, one token at a time, never splitting a UTF-8 character."""

    def __init__(self, vocab: Any) -> None:
        self.vocab = vocab
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buf = ctypes.create_string_buffer(256)

    def piece(self, token: int) -> bytes:
        n = llama_cpp.llama_token_to_piece(self.vocab, token, self._buf, len(self._buf), 0, False)
        if n < 0:  # the buffer is too small; -n is the size needed
            self._buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, self._buf, -n, 0, False)
        return bytes(self._buf.raw[:n])

    def text(self, token: int) -> str:
        return self._decoder.decode(self.piece(token))


class StopFinder:
    """Holds back text that could be the start of a stop string until it is known not to be."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.hold = max((len(s) for s in self.stops), default=1) - 1

    def feed(self, text: str) -> tuple[str, bool]:
        """Text now safe to send, and whether a stop string was found (text cut before it)."""
        self.pending += text
        cut = min((i for i in (self.pending.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            out, self.pending = self.pending[:cut], ""
            return out, True
        if self.hold <= 0:
            out, self.pending = self.pending, ""
            return out, False
        keep = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(stop[:size]):
                    keep = max(keep, size)
                    break
        out = self.pending[:len(self.pending) - keep]
        self.pending = self.pending[len(out):]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out
