"""YaRN: stretching RoPE to longer contexts, as DeepSeek-V2 and V3 configure it (arXiv 2309.00071).

A model pre-trained at `original_max_seq_len` positions (4096 for V2 and V3) meets angles m * theta_i it never
saw once m grows past that. YaRN changes each RoPE frequency by how many turns it makes over the original
context (its wavelength 2 pi / theta_i, measured in positions):

    turns_i = original_max_seq_len / wavelength_i
    turns_i > beta_fast (32)  the pair turned many times in pre-training: it measures short distances, keep it
    turns_i < beta_slow (1)   the pair never completed a turn: divide its frequency by `factor` (interpolate)
    in between                a linear ramp from one to the other over the pair index

and rescales attention: queries and keys are multiplied by an "mscale" so that the softmax stays as sharp as
in pre-training when it spreads over more keys. DeepSeek's configs give two numbers, `mscale` and
`mscale_all_dim`; transformers (and DeepSeek's code) apply

    cos, sin   x  attention_factor = mscale(factor, mscale) / mscale(factor, mscale_all_dim)
    softmax    x  mscale(factor, mscale_all_dim) ** 2          (on 1 / sqrt(qk_head_dim))
    mscale(s, m) = 0.1 * m * ln(s) + 1   (1 when s <= 1)

V3 sets mscale = mscale_all_dim = 1, so the RoPE part is unscaled and the whole score is multiplied by
(0.1 ln 40 + 1)^2 = 1.87. `factor` is 40 in both: 4096 x 40 = 163,840 positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .rope import rope_cos_sin, rope_inv_freq


@dataclass(frozen=True)
class Yarn:
    """The `rope_scaling` (transformers 5: `rope_parameters`) of a V2/V3 config with rope_type "yarn"."""

    factor: float
    original_max_seq_len: int
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float = 1.0
    mscale_all_dim: float = 0.0

    def __post_init__(self) -> None:
        if not (isinstance(self.factor, (int, float)) and self.factor >= 1):
            raise ValueError(f"Yarn.factor must be a number >= 1 (how much longer the context becomes), "
                             f"got {self.factor!r}")
        if isinstance(self.original_max_seq_len, bool) or not isinstance(self.original_max_seq_len, int) \
                or self.original_max_seq_len <= 0:
            raise ValueError(f"Yarn.original_max_seq_len must be a positive int (the pre-training context), "
                             f"got {self.original_max_seq_len!r}")
        if not self.beta_fast > self.beta_slow > 0:
            raise ValueError(f"Yarn needs beta_fast > beta_slow > 0, got {self.beta_fast} and {self.beta_slow}")

    @property
    def attention_factor(self) -> float:
        """What cos and sin are multiplied by (transformers' `attention_scaling`)."""
        if self.mscale and self.mscale_all_dim:
            return yarn_mscale(self.factor, self.mscale) / yarn_mscale(self.factor, self.mscale_all_dim)
        return yarn_mscale(self.factor)

    @property
    def softmax_factor(self) -> float:
        """What the softmax scale 1 / sqrt(qk_head_dim) is multiplied by."""
        return yarn_mscale(self.factor, self.mscale_all_dim) ** 2 if self.mscale_all_dim else 1.0

    @classmethod
    def from_hf(cls, params: dict) -> "Yarn":
        """From a config's rope_scaling / rope_parameters dict with rope_type (or type) "yarn"."""
        unsupported = [k for k in ("attention_factor",) if params.get(k) is not None]
        if unsupported or params.get("truncate", True) is not True:
            raise ValueError(f"Yarn.from_hf: {unsupported or ['truncate=False']} are not supported; DeepSeek's "
                             "configs set factor, original_max_position_embeddings, beta_fast, beta_slow, mscale, "
                             "mscale_all_dim")
        if params.get("factor") is None or params.get("original_max_position_embeddings") is None:
            raise ValueError("Yarn.from_hf: a yarn rope_scaling needs factor and original_max_position_embeddings")
        return cls(factor=float(params["factor"]),
                   original_max_seq_len=int(params["original_max_position_embeddings"]),
                   beta_fast=float(params.get("beta_fast") or 32), beta_slow=float(params.get("beta_slow") or 1),
                   mscale=float(params.get("mscale") or 0), mscale_all_dim=float(params.get("mscale_all_dim") or 0))

    def to_hf(self, rope_theta: float) -> dict:
        return {"rope_type": "yarn", "rope_theta": rope_theta, "factor": self.factor,
                "original_max_position_embeddings": self.original_max_seq_len, "beta_fast": self.beta_fast,
                "beta_slow": self.beta_slow, "mscale": self.mscale, "mscale_all_dim": self.mscale_all_dim}


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    """0.1 * mscale * ln(scale) + 1, or 1 when the context is not stretched (scale <= 1)."""
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def yarn_inv_freq(dim: int, theta: float, yarn: Yarn) -> torch.Tensor:
    """The dim / 2 RoPE frequencies after YaRN (float32): each one between theta_i and theta_i / factor."""
    base = rope_inv_freq(dim, theta)  # theta_i, fastest first

    def pair_index(turns: float) -> float:  # the (fractional) pair i that makes `turns` turns over the context
        return dim * math.log(yarn.original_max_seq_len / (turns * 2 * math.pi)) / (2 * math.log(theta))

    low = max(math.floor(pair_index(yarn.beta_fast)), 0)
    high = min(math.ceil(pair_index(yarn.beta_slow)), dim - 1)
    if low == high:
        high += 0.001  # as transformers does, to avoid dividing by zero
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)  # 0: keep, 1: divide
    return base / yarn.factor * ramp + base * (1 - ramp)


class YarnRotaryEmbedding(torch.nn.Module):
    """(cos, sin) rows for the requested positions with YaRN's frequencies, times its attention_factor.

    Like rope.RotaryEmbedding: a float32 table over max_seq_len positions, built once per device."""

    def __init__(self, dim: int, theta: float, max_seq_len: int, yarn: Yarn | None) -> None:
        super().__init__()
        self.dim, self.theta, self.max_seq_len, self.yarn = dim, theta, max_seq_len, yarn
        self._table: tuple[torch.Tensor, torch.Tensor] | None = None

    def _build(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        if self.yarn is None:
            inv_freq, scale = rope_inv_freq(self.dim, self.theta), 1.0
        else:
            inv_freq, scale = yarn_inv_freq(self.dim, self.theta, self.yarn), self.yarn.attention_factor
        cos, sin = rope_cos_sin(torch.arange(self.max_seq_len, device=device), inv_freq.to(device))
        return cos * scale, sin * scale

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._table is None or self._table[0].device != positions.device:
            self._table = self._build(positions.device)
        cos, sin = self._table
        return cos[positions], sin[positions]

    def extra_repr(self) -> str:
        return f"dim={self.dim}, theta={self.theta}, max_seq_len={self.max_seq_len}, yarn={self.yarn}"
