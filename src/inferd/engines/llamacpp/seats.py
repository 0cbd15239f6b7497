"""Which free sequence slot a request takes: the prompt cache's rules (``choose_seat``).

A slot keeps the KV cells of the last request that ran in it; the choice weighs reusing them
(the longest shared prefix), keeping other conversations' cells (an empty slot, else the least
recently used one) and the running sequence ids' contiguity (see ``runs``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar


class SlotState(Protocol):
    """What the choice reads of a slot."""

    @property
    def seq(self) -> int: ...

    @property
    def cells(self) -> list[int]: ...  # tokens whose KV the sequence holds

    @property
    def used(self) -> int: ...  # when a request last took or left it (0: never)


S = TypeVar("S", bound=SlotState)


# A shared prefix shorter than this is read again rather than copied from another slot: a copy
# moves the slot's whole KV stream (all ``n_ctx`` cells, about 23 KB each for the bundled model).
MIN_COPY = 32


def runs(seqs: set[int]) -> int:
    """Runs of consecutive ids in ``seqs``: the micro-batches llama.cpp splits a step into.

    With one KV stream per sequence, llama.cpp only puts sequences with consecutive ids in one
    micro-batch (``split_equal``), and each micro-batch is a pass over all the weights: a step of
    sequences 0, 2, 4 and 6 costs four passes where 0, 1, 2 and 3 cost one.
    """
    ordered = sorted(seqs)
    return sum(1 for i, seq in enumerate(ordered) if i == 0 or seq != ordered[i - 1] + 1)


def shared_prefix(cells: list[int], prompt: list[int]) -> int:
    """How many of ``prompt``'s first tokens ``cells`` holds, short of the last token: that
    one is always read again, its logits pick the first token of the answer."""
    n = 0
    for a, b in zip(cells, prompt[:-1], strict=False):
        if a != b:
            break
        n += 1
    return n


@dataclass(frozen=True)
class Seat(Generic[S]):
    """Where a request runs: ``slot``, keeping its first ``keep`` cells; with a ``source``,
    the slot's cells are first replaced by a copy of the source's (then cut to ``keep``)."""

    slot: S
    keep: int
    source: S | None = None


def choose_seat(free: list[S], running: set[int], prompt: list[int], cache: bool,
                *, min_copy: int = MIN_COPY) -> Seat[S]:
    """The free slot a request takes, and what it keeps of the cells found there.

    Without the cache: the slot that keeps the running ids contiguous (one decode per run of
    ids, see ``runs``), the emptiest of equals. With it, slots are kept for their cells:

    - the *victim*, the slot to give up if need be, is an empty one, else the least recently
      used;
    - the *hit* is the slot sharing the longest prefix with ``prompt`` (of equals, the one
      holding the fewest tokens beyond it);
    - the request takes the hit in place when nothing lies beyond the shared prefix (it
      continues what the hit holds) or the hit is the victim anyway;
    - it takes the victim, into which the hit's cells are copied first, when the shared prefix
      is ``min_copy`` tokens or more and the victim is empty or the hit holds more beyond the
      prefix than in it (another conversation after a common system prompt);
    - else it takes the hit in place if the hit holds no more beyond the prefix than in it (a
      reply the client changed, a branch left), or the victim, reusing what that one shares.

    Contiguity of the running ids only orders equals. An empty ``prompt`` reuses nothing.
    """
    def contiguity(slot: S) -> int:
        return runs(running | {slot.seq})

    if not cache:
        return Seat(min(free, key=lambda s: (contiguity(s), len(s.cells))), 0)
    shares = {s.seq: shared_prefix(s.cells, prompt) for s in free}
    victim = min(free, key=lambda s: (bool(s.cells), s.used if s.cells else 0, contiguity(s)))
    hit = min(free, key=lambda s: (-shares[s.seq], len(s.cells) - shares[s.seq],
                                   contiguity(s)))
    shared = shares[hit.seq]
    beyond = len(hit.cells) - shared
    if shared == 0:
        return Seat(victim, 0)
    if beyond == 0 or hit is victim:
        return Seat(hit, shared)
    if shared >= min_copy and (not victim.cells or beyond > shared):
        return Seat(victim, shared, source=hit)
    if beyond <= shared:
        return Seat(hit, shared)
    return Seat(victim, shares[victim.seq])
