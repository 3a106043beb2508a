"""Chapter 01's exercise: RMSNorm written as a function, with its statistic in float32.

    rms_norm(x, weight, eps) = weight * (x / sqrt(mean(x**2 over the last axis) + eps)), back in x's dtype
"""

from __future__ import annotations

import torch

from ._contract import checker, expect_close, expect_shape

__all__ = ["check_rms_norm", "rms_norm"]


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The reference, as minids.RMSNorm.forward computes it."""
    x32 = x.float()
    inv_rms = torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + eps)
    return weight * (x32 * inv_rms).to(x.dtype)


@checker("rms_norm")
def check_rms_norm(fn) -> None:
    """fn(x, weight, eps) -> RMSNorm of x over its last axis (the channels), in x's dtype."""
    g = torch.Generator().manual_seed(0)
    # 1. float32, (batch, tokens, channels): the statistic is per token, over the last axis only.
    x = torch.randn(3, 4, 16, generator=g) * 2 + 0.5
    w = torch.rand(16, generator=g) + 0.5
    got = fn(x, w, 1e-6)
    expect_shape(got, x.shape, "rms_norm(x) for x of shape (3, 4, 16)")
    rms = got.div(w).pow(2).mean(-1)
    assert torch.allclose(rms, torch.ones_like(rms), atol=1e-3), (
        f"after dividing by the weight, the RMS over the last axis (channels) should be 1 for every token; "
        f"got {rms.flatten()[:3].tolist()}... (reduce over dim=-1, keepdim=True, with the mean, not the sum)")
    expect_close(got, rms_norm(x, w, 1e-6), "rms_norm(x, weight, 1e-6)")
    # 2. eps goes inside the square root, and the one passed in is the one used.
    expect_close(fn(x, w, 0.5), rms_norm(x, w, 0.5), "rms_norm(x, weight, eps=0.5) (eps belongs inside the sqrt)")
    # 3. A token whose vector is all zeros: eps keeps it finite (0, not nan).
    zeros = torch.zeros(2, 16)
    out = fn(zeros, w, 1e-6)
    assert torch.isfinite(out).all(), "a token of all zeros gave nan or inf: add eps before the square root"
    # 4. float16 activations of RMS about 300: x**2 overflows float16 (largest value 65504) unless the mean
    #    of squares is taken in float32; the result goes back to float16.
    big = (torch.randn(2, 64, generator=g) * 300).half()
    w16 = (torch.rand(64, generator=g) + 0.5).half()
    got16 = fn(big, w16, 1e-6)
    want16 = rms_norm(big, w16, 1e-6)
    expect_shape(got16, big.shape, "rms_norm(x) for float16 x")
    assert got16.dtype == torch.float16, (
        f"for float16 input the result is {got16.dtype}: cast the normalised x back to x.dtype before the weight")
    bad = ~torch.isclose(got16.float(), want16.float(), rtol=4e-3, atol=1e-3)
    assert not bad.any(), (
        f"for float16 input of RMS about 300, {int(bad.sum())} of {bad.numel()} values are wrong (e.g. got "
        f"{got16[bad][0].item():.4g}, expected {want16[bad][0].item():.4g}): x**2 overflows float16, so square "
        f"and average in float32 (x.float()) and cast the result back")
