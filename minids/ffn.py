"""SwiGLU feed-forward network: a gated two-layer MLP.

    FFN(x) = W_down( SiLU(W_gate x) * (W_up x) )

Three matrices instead of two; to keep the parameter count of a 4*d_model MLP, the hidden size is
about 8/3 * d_model, which DeepSeek LLM rounds up to a multiple of 256: 11008 for the 7B (d_model 4096) and
22016 for the 67B (d_model 8192). Names follow Llama-format checkpoints: gate_proj, up_proj, down_proj.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def swiglu_hidden_size(d_model: int, multiple_of: int = 256) -> int:
    """8/3 * d_model rounded up to a multiple of `multiple_of` (4096 -> 11008, 8192 -> 22016)."""
    return multiple_of * math.ceil(8 * d_model / 3 / multiple_of)


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, d_ff: int, device=None, dtype=None) -> None:
        super().__init__()
        kw = dict(bias=False, device=device, dtype=dtype)
        self.gate_proj = nn.Linear(d_model, d_ff, **kw)
        self.up_proj = nn.Linear(d_model, d_ff, **kw)
        self.down_proj = nn.Linear(d_ff, d_model, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The gate SiLU(W_gate x) decides, channel by channel, how much of W_up x passes.
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
