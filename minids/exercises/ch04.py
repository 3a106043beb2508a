"""Chapter 04's exercises: the SwiGLU feed-forward network as a function, and the 8/3 · d_model width rule.

    swiglu(x, w_gate, w_up, w_down) = (SiLU(x W_gate^T) * (x W_up^T)) W_down^T     (nn.Linear's (out, in) weights)
    ffn_hidden_size(d_model, multiple_of=256) = 8/3 · d_model rounded UP to a multiple of multiple_of
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ffn import swiglu_hidden_size
from ._contract import checker, expect_close, expect_equal

__all__ = ["check_swiglu", "check_ffn_hidden_size", "swiglu"]


def swiglu(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
    """The reference: the weights are stored as nn.Linear stores them, (out_features, in_features)."""
    return (F.silu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T


@checker("swiglu")
def check_swiglu(fn) -> None:
    """fn(x, w_gate, w_up, w_down) -> SwiGLU(x); x (..., d_model), w_gate and w_up (d_ff, d_model),
    w_down (d_model, d_ff)."""
    g = torch.Generator().manual_seed(0)
    d_model, d_ff = 6, 16  # not square, so that a missing transpose fails loudly
    x = torch.randn(2, 3, d_model, generator=g)
    w_gate, w_up = torch.randn(d_ff, d_model, generator=g), torch.randn(d_ff, d_model, generator=g)
    w_down = torch.randn(d_model, d_ff, generator=g) / 4
    got = fn(x, w_gate, w_up, w_down)
    want = swiglu(x, w_gate, w_up, w_down)
    if isinstance(got, torch.Tensor) and got.shape == want.shape:
        if torch.allclose(got, swiglu(x, w_up, w_gate, w_down), atol=1e-5):
            raise AssertionError("swiglu: the SiLU is on the up projection; the gate is SiLU(x W_gate^T), and "
                                 "it multiplies x W_up^T")
        no_silu = (x @ w_gate.T) * (x @ w_up.T) @ w_down.T
        if torch.allclose(got, no_silu, atol=1e-5):
            raise AssertionError("swiglu: the gate has no SiLU (you multiplied the two projections directly)")
        for name, act in (("ReLU", F.relu), ("GELU", F.gelu), ("sigmoid", torch.sigmoid)):
            if torch.allclose(got, (act(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T, atol=1e-5):
                raise AssertionError(f"swiglu: the gate uses {name}; SwiGLU's gate is SiLU(z) = z * sigmoid(z)")
    expect_close(got, want, "swiglu(x) for x (2, 3, 6), d_ff 16", rtol=1e-4, atol=1e-5)


# (d_model, multiple_of, what the case catches)
_WIDTHS = [
    (4096, 256, "the 7B: 8/3 x 4096 = 10,922.7"),
    (8192, 256, "the 67B: 8/3 x 8192 = 21,845.3 (rounding to the nearest multiple gives 21,760)"),
    (768, 256, "8/3 x 768 = 2,048 is already a multiple of 256: no rounding needed"),
    (1000, 64, "multiple_of is a parameter: 8/3 x 1000 = 2,666.7 up to a multiple of 64"),
]


@checker("ffn_hidden_size")
def check_ffn_hidden_size(fn) -> None:
    """fn(d_model, multiple_of=256) -> 8/3 · d_model rounded up to a multiple of multiple_of."""
    for d_model, multiple_of, why in _WIDTHS:
        expect_equal(fn(d_model, multiple_of), swiglu_hidden_size(d_model, multiple_of),
                     f"ffn_hidden_size({d_model}, {multiple_of}) ({why})")
