"""Rotary position embeddings (RoPE), in the rotate-half layout of Llama-format checkpoints.

RoPE encodes position m by rotating each pair of channels of q and k by the angle m * theta_i, with
theta_i = rope_theta ** (-2i / head_dim). Because a rotation by m followed by the inverse rotation by n is a
rotation by m - n, the score q_m . k_n depends only on the distance m - n.

Which channels form a pair is a convention, and checkpoints depend on it:
- rotate-half (Llama-format, used here): channel i is paired with channel i + head_dim/2.
- interleaved (the original RoFormer / Meta's reference code): channel 2i is paired with channel 2i+1.
DeepSeek LLM's checkpoints load into transformers' `LlamaForCausalLM`, whose q_proj and k_proj rows were
permuted for the rotate-half layout. Applying interleaved RoPE to those weights gives a different, wrong
function: the pairs would mix channels that were never trained together. `interleaved_to_rotate_half`
gives the permutation between the two, and the tests check that each layout is right for its weights.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn


def rope_inv_freq(head_dim: int, theta: float = 10000.0, device=None) -> torch.Tensor:
    """The angular frequencies theta_i = theta ** (-2i / head_dim), i = 0 .. head_dim/2 - 1 (float32)."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    return 1.0 / (theta**exponents)


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the angles m * theta_i, shape (t, head_dim), in float32.

    Each frequency appears twice, [theta_0 .. theta_{d/2-1}, theta_0 .. theta_{d/2-1}], because in the
    rotate-half layout channel i and channel i + d/2 rotate together.
    """
    angles = positions.float()[:, None] * inv_freq[None, :]  # (t, d/2)
    angles = torch.cat([angles, angles], dim=-1)  # (t, d)
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last axis: a 90-degree turn of every pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (..., t, head_dim) by the angles whose cos and sin are (t, head_dim); rotate-half layout."""
    return x * cos.to(x.dtype) + rotate_half(x) * sin.to(x.dtype)


def apply_rope_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The same rotation with pairs (2i, 2i+1), for comparison only (the original RoFormer layout).

    Takes the same cos/sin as `apply_rope` and uses their first half (one angle per pair).
    """
    half = x.shape[-1] // 2
    c, s = cos[..., :half].to(x.dtype), sin[..., :half].to(x.dtype)
    pairs = rearrange(x, "... (p two) -> ... p two", two=2)
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack([even * c - odd * s, even * s + odd * c], dim=-1)
    return rearrange(rotated, "... p two -> ... (p two)")


def interleaved_to_rotate_half(head_dim: int) -> torch.Tensor:
    """Channel order that turns an interleaved vector into the rotate-half layout.

    `x[..., perm]` puts the even channels (first of each pair) in the first half and the odd ones in the
    second, so that apply_rope(x[..., perm]) == apply_rope_interleaved(x)[..., perm]. Checkpoint converters
    apply this permutation to the rows of q_proj and k_proj of each head.
    """
    return torch.cat([torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)])


class RotaryEmbedding(nn.Module):
    """Returns (cos, sin) rows for the requested positions from a float32 table built once per device.

    The table is a plain attribute, not a buffer: `model.to(torch.bfloat16)` would otherwise round the
    frequencies to bf16 and shift every angle at long positions. It is rebuilt lazily whenever the
    positions live on another device (for example after building on the meta device).
    """

    def __init__(self, head_dim: int, theta: float = 10000.0, max_seq_len: int = 4096) -> None:
        super().__init__()
        self.head_dim, self.theta, self.max_seq_len = head_dim, theta, max_seq_len
        self._table: tuple[torch.Tensor, torch.Tensor] | None = None

    def _build(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = rope_inv_freq(self.head_dim, self.theta, device=device)
        return rope_cos_sin(torch.arange(self.max_seq_len, device=device), inv_freq)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._table is None or self._table[0].device != positions.device:
            self._table = self._build(positions.device)
        cos, sin = self._table
        return cos[positions], sin[positions]  # each (t, head_dim)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, theta={self.theta}, max_seq_len={self.max_seq_len}"
