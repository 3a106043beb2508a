"""RMSNorm: rescale each token's vector to unit root-mean-square, then by a learned gain.

    RMSNorm(x) = g * x / sqrt(mean(x**2) + eps)

Unlike LayerNorm there is no mean subtraction and no bias: one statistic per token, one learned vector
g (called `weight`, as in Llama-format checkpoints). DeepSeek LLM applies it before attention and before
the FFN of every layer (pre-norm) and once more before the lm_head.
"""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, d_model: int, eps: float = 1e-6, device=None, dtype=None) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model, device=device, dtype=dtype))  # the gain g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The mean of squares is taken in float32: in bf16 (8 bits of mantissa) the sum over 4096 or 8192
        # channels would lose most of its precision. The result goes back to the input's dtype.
        x32 = x.float()
        inv_rms = torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * (x32 * inv_rms).to(x.dtype)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
