"""Chapter 02's exercise: rotate_half, the 90-degree turn of every channel pair in the rotate-half layout.

    rotate_half((x1, x2)) = (-x2, x1), x1 and x2 the two halves of the last axis

so that apply_rope(x) = x * cos + rotate_half(x) * sin turns pair i = (channel i, channel i + d/2) by its angle.
"""

from __future__ import annotations

import torch

from ..rope import rotate_half
from ._contract import checker, expect_close, expect_shape

__all__ = ["check_rotate_half"]


def _interleaved_turn(x: torch.Tensor) -> torch.Tensor:
    """The same 90-degree turn with pairs (2i, 2i+1): the RoFormer layout, not the checkpoints'."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)


@checker("rotate_half")
def check_rotate_half(fn) -> None:
    """fn(x) -> (-x2, x1) on the two halves of the last axis of x (..., head_dim)."""
    x = torch.arange(8.0).reshape(1, 8)
    original = x.clone()
    got = fn(x)
    expect_shape(got, x.shape, "rotate_half(x) for x of shape (1, 8)")
    want = rotate_half(original)
    assert torch.equal(x, original), "rotate_half changed its input in place: return a new tensor"
    if torch.equal(got, _interleaved_turn(original)):
        raise AssertionError(f"rotate_half([0..7]) gave {got[0].tolist()}: that turns pairs (2i, 2i+1), the "
                             f"interleaved layout; here channel i pairs with channel i + d/2, so the answer is "
                             f"{want[0].tolist()}")
    if torch.equal(got, -want):
        raise AssertionError(f"rotate_half([0..7]) gave {got[0].tolist()}: the sign is on the wrong half; "
                             f"(x1, x2) -> (-x2, x1) gives {want[0].tolist()}")
    if torch.equal(got, original.roll(4, dims=-1)):
        raise AssertionError(f"rotate_half([0..7]) gave {got[0].tolist()}: the halves are swapped but the "
                             f"second half (x1) needs no sign and the first (-x2) does: {want[0].tolist()}")
    expect_close(got, want, "rotate_half([0, 1, ..., 7])")
    # Batched, as attention calls it: (batch, heads, tokens, head_dim); the turn acts on the last axis only.
    xb = torch.randn(2, 3, 5, 16, generator=torch.Generator().manual_seed(0))
    expect_close(fn(xb), rotate_half(xb), "rotate_half(x) for x of shape (2, 3, 5, 16) (turn the last axis)")
