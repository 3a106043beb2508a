"""Checkers for chapter 12 (sliding windows): the band mask and the rolling buffer's slot.

The mask is compared with `minids.attention.sliding_window_mask` (transformers' convention: a window of W
keys, the query's own included); the slot with the rule of `minids.rolling_cache.RollingKVCache`
(position i in slot i mod W). Hints name the first query, key or position that differs.
"""

from __future__ import annotations

import torch

from ._contract import checker, expect_shape

__all__ = ["check_window_mask", "check_rolling_slot"]


@checker("window_mask")
def check_window_mask(fn):
    """fn(T, W) -> a bool (T, T) tensor, True where the query at position q may see the key at position s:
    q - W < s <= q (W keys, the query's own included)."""
    from minids.attention import sliding_window_mask

    for T, W in ((10, 4), (7, 1), (6, 9)):
        got = fn(T, W)
        expect_shape(got, (T, T), f"the mask for T={T}, W={W}")
        assert got.dtype == torch.bool, f"the mask has dtype {got.dtype}, expected torch.bool"
        want = sliding_window_mask(T, 0, W)
        if torch.equal(got, want):
            continue
        if torch.equal(got, sliding_window_mask(T, 0, W + 1)):
            raise AssertionError(f"T={T}, W={W}: every query sees W + 1 keys (q - s <= W): that is the Mistral "
                                 "paper's counting; here a window of W holds W keys, the query's own included")
        if torch.equal(got, want.T):
            raise AssertionError(f"T={T}, W={W}: the mask is transposed: rows are queries q, columns keys s")
        q, s = (int(i) for i in (got != want).nonzero()[0])
        raise AssertionError(f"T={T}, W={W}: query {q}, key {s} is {bool(got[q, s])}, expected {bool(want[q, s])} "
                             f"(a query sees the keys q - W < s <= q: {want[q].sum().item()} keys for query {q})")


@checker("rolling_slot")
def check_rolling_slot(fn):
    """fn(position, W) -> the slot (an int in 0 .. W - 1) that a rolling buffer of W slots writes position into."""
    for W in (1, 4, 6):
        for position in range(4 * W + 1):
            got = int(fn(position, W))
            want = position % W
            assert 0 <= got < W, f"position {position}, W={W}: slot {got} is outside the buffer's slots 0 .. {W - 1}"
            assert got == want, (f"position {position}, W={W}: slot {got}, expected {want} (position i goes to slot "
                                 f"i mod W, so that position i + W overwrites position i, which has left the window)")
