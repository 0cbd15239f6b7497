"""Which free sequence slot a request takes (``choose_seat``): the prompt cache's rules."""

from __future__ import annotations

from inferd.engines.llamacpp.batch import _Slot
from inferd.engines.llamacpp.seats import choose_seat, shared_prefix

HEAD = list(range(1000, 1007))  # a chat template's head: every prompt starts with it
SYSTEM = list(range(2000, 2040))  # a system prompt of 40 tokens


def slot(seq: int, cells: list[int] | None = None, used: int = 0) -> _Slot:
    return _Slot(seq, cells=list(cells or []), used=used)


def conversation(n: int, length: int = 100) -> list[int]:
    """Cells a conversation left: the template head, then its own tokens."""
    return HEAD + [10_000 * (n + 1) + i for i in range(length)]


def test_shared_prefix_leaves_the_last_prompt_token_to_read() -> None:
    assert shared_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert shared_prefix([1, 2, 3], [1, 2, 3, 4]) == 3
    # the whole prompt cached: its last token is read again, its logits pick the answer
    assert shared_prefix([1, 2, 3, 4], [1, 2, 3]) == 2
    assert shared_prefix([], [1, 2]) == 0


def test_the_longest_shared_prefix_wins() -> None:
    a, b = conversation(0), conversation(1)
    slots = [slot(0, a, used=3), slot(1, b, used=1), slot(2), slot(3)]
    seat = choose_seat(slots, set(), [*a, 7, 8, 9], True)
    assert seat.slot.seq == 0 and seat.keep == len(a) and seat.source is None
    seat = choose_seat(slots, set(), [*b, 7], True)
    assert seat.slot.seq == 1 and seat.keep == len(b)


def test_a_new_conversation_leaves_the_others_cells_alone() -> None:
    # Conversation 0 ended on slot 0; a new one shares only the template's head with it. It
    # takes an empty slot, not slot 0, although slot 0 shares more: 0 comes back to its cells.
    a = conversation(0)
    slots = [slot(0, a, used=1), slot(1), slot(2), slot(3)]
    seat = choose_seat(slots, set(), conversation(1, 20), True)
    assert seat.slot.seq != 0 and seat.keep == 0 and seat.source is None
    assert seat.slot.seq == 1  # of the empty slots, the first (contiguity orders equals)


def test_least_recently_used_is_evicted_first() -> None:
    slots = [slot(0, conversation(0), used=5), slot(1, conversation(1), used=2),
             slot(2, conversation(2), used=9), slot(3, conversation(3), used=7)]
    seat = choose_seat(slots, set(), conversation(4, 30), True)
    assert seat.slot.seq == 1 and seat.keep == len(HEAD)  # all it shares: the head
    # one that declines the cache (an empty prompt) evicts the same slot and keeps nothing
    seat = choose_seat(slots, set(), [], True)
    assert seat.slot.seq == 1 and seat.keep == 0


def test_an_empty_slot_before_any_least_recently_used() -> None:
    slots = [slot(0, conversation(0), used=1), slot(1, conversation(1), used=2), slot(2)]
    assert choose_seat(slots, set(), conversation(2), True).slot.seq == 2


def test_contiguity_orders_equals_only() -> None:
    # Sequences 0 and 2 run. Of the empty slots 1 and 3, slot 1 keeps the running ids in one
    # run (one decode per step).
    free = [slot(1), slot(3)]
    assert choose_seat(free, {0, 2}, conversation(0), True).slot.seq == 1
    # Two slots hold the same prefix: the one beside the running sequences.
    a = conversation(0)
    free = [slot(1, a, used=1), slot(3, a, used=2)]
    assert choose_seat(free, {4}, [*a, 5], True).slot.seq == 3
    # Contiguity does not outweigh a longer prefix: slot 1 is beside sequence 0, slot 3 has it.
    free = [slot(1), slot(3, a, used=1)]
    seat = choose_seat(free, {0}, [*a, 5], True)
    assert seat.slot.seq == 3 and seat.keep == len(a)
    # Of two slots sharing the same prefix, the one holding the fewest other tokens beyond it.
    free = [slot(1, [*a, 1, 2, 3], used=1), slot(2, [*a, 4], used=2)]
    seat = choose_seat(free, set(), [*a, 9], True)
    assert seat.slot.seq == 2 and seat.keep == len(a)


def test_a_common_system_prompt_is_copied_not_taken() -> None:
    # Conversation 0 (system prompt, then its own 100 tokens) ended on slot 0. A new
    # conversation with the same system prompt copies slot 0's cells into an empty slot and
    # keeps the 47 shared tokens: conversation 0 keeps its own.
    a = HEAD + SYSTEM + list(range(100))
    slots = [slot(0, a, used=1), slot(1), slot(2)]
    seat = choose_seat(slots, set(), HEAD + SYSTEM + [5, 6, 7], True)
    assert seat.slot.seq == 1 and seat.source is slots[0] and seat.keep == len(HEAD + SYSTEM)
    # No empty slot: the least recently used takes the copy, since slot 0 holds more of its
    # own than shared.
    slots = [slot(0, a, used=4), slot(1, conversation(1), used=2), slot(2, conversation(2),
                                                                       used=3)]
    seat = choose_seat(slots, set(), HEAD + SYSTEM + [5, 6, 7], True)
    assert seat.slot.seq == 1 and seat.source is slots[0] and seat.keep == len(HEAD + SYSTEM)
    # A prefix shorter than ``min_copy`` is read again rather than copied.
    seat = choose_seat(slots, set(), HEAD + SYSTEM + [5, 6, 7], True, min_copy=100)
    assert seat.slot.seq == 1 and seat.source is None and seat.keep == len(HEAD)


def test_a_changed_reply_takes_its_slot_in_place() -> None:
    # The client sends the conversation back with the last reply edited: the slot holds a few
    # tokens beyond the shared prefix, fewer than shared. No empty slot: it is taken in place.
    a = conversation(0)
    slots = [slot(0, [*a, 1, 2, 3], used=4), slot(1, conversation(1), used=2)]
    seat = choose_seat(slots, set(), [*a, 9, 9], True)
    assert seat.slot.seq == 0 and seat.keep == len(a) and seat.source is None


def test_without_the_cache_contiguity_then_the_emptiest() -> None:
    a = conversation(0)
    free = [slot(1, a, used=1), slot(3)]
    seat = choose_seat(free, {0}, [*a, 5], False)
    assert seat.slot.seq == 1 and seat.keep == 0  # beside sequence 0, its cells not reused
    free = [slot(1, a, used=1), slot(2)]
    assert choose_seat(free, set(), [*a, 5], False).slot.seq == 2
