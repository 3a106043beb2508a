"""Chapter 00a's exercise: one BPE merge step, written by hand.

BPE training repeats two things: find the most frequent adjacent pair of ids, then replace every occurrence
of that pair, left to right, by one new id. `check_merge_pair` checks the second part.
"""

from __future__ import annotations

from ._contract import checker, expect_equal

__all__ = ["check_merge_pair", "merge_pair"]


def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """The reference: scan left to right; where `pair` starts, emit `new_id` and skip both ids."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


# (ids, pair, new_id, what the case catches)
_CASES = [
    ([1, 2, 3, 1, 2], (1, 2), 9, "the pair at the very end must be merged too"),
    ([3, 1, 2, 4], (1, 2), 9, "ids before and after the pair must be kept"),
    ([1, 2, 3, 4, 5], (1, 2), 9, "the id after the last pair must be kept (the last id is easy to drop)"),
    ([5, 5, 5], (5, 5), 7, "overlapping pairs: (5, 5, 5) merges once, left to right, into (7, 5)"),
    ([5, 5, 5, 5], (5, 5), 7, "(5, 5, 5, 5) merges into (7, 7)"),
    ([2, 1], (1, 2), 9, "the order inside a pair matters: (2, 1) is not (1, 2)"),
    ([], (1, 2), 9, "an empty list stays empty"),
    ([4], (1, 2), 9, "a single id stays as it is"),
]


@checker("merge_pair")
def check_merge_pair(fn) -> None:
    """fn(ids, pair, new_id) -> a new list with every left-to-right occurrence of `pair` replaced by new_id."""
    for ids, pair, new_id, why in _CASES:
        given = list(ids)
        got = fn(given, pair, new_id)
        assert isinstance(got, list), f"merge_pair should return a list, got {type(got).__name__}"
        expect_equal(got, merge_pair(ids, pair, new_id), f"merge_pair({ids}, {pair}, {new_id}) ({why})")
        assert given == ids, f"merge_pair changed its input list {ids} into {given}: build a new list instead"
