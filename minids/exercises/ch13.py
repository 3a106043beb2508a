"""Chapter 13's exercises: LoRA's merged weight, and its trainable parameter count from a config.

    merged_weight(W0, A, B, alpha, r) = W0 + (alpha / r) B A            A: (r, d_in), B: (d_out, r)
    lora_count(config, r, targets)    = n_layers * sum over targets of r (d_in + d_out)
"""

from __future__ import annotations

import torch

from ..config import ModelConfig
from ..lora import lora_param_count
from ._contract import checker, expect_close, expect_equal, expect_shape

__all__ = ["check_merged_weight", "check_lora_count", "merged_weight"]


def merged_weight(W0: torch.Tensor, A: torch.Tensor, B: torch.Tensor, alpha: float, r: int) -> torch.Tensor:
    """The reference: the one matrix that computes W0 x + (alpha/r) B A x."""
    return W0 + (alpha / r) * (B @ A)


@checker("merged_weight")
def check_merged_weight(fn) -> None:
    """fn(W0, A, B, alpha, r) -> W0 + (alpha/r) B A, a (d_out, d_in) matrix."""
    g = torch.Generator().manual_seed(0)
    d_out, d_in, r, alpha = 12, 20, 4, 16.0  # alpha / r = 4: forgetting or inverting the scale shows
    W0 = torch.randn(d_out, d_in, generator=g)
    A, B = torch.randn(r, d_in, generator=g), torch.randn(d_out, r, generator=g)
    got = fn(W0.clone(), A.clone(), B.clone(), alpha, r)
    expect_shape(got, (d_out, d_in), "merged_weight for W0 (12, 20), A (4, 20), B (12, 4)")
    want = merged_weight(W0, A, B, alpha, r)
    delta = got - W0
    for wrong, hint in (((B @ A), "the change has no alpha / r scale"),
                        ((alpha * B @ A), "the change is scaled by alpha, not alpha / r"),
                        ((r / alpha) * (B @ A), "the change is scaled by r / alpha, not alpha / r")):
        if torch.allclose(delta, wrong, atol=1e-4):
            raise AssertionError(f"merged_weight: {hint} (alpha = {alpha}, r = {r})")
    expect_close(got, want, "merged_weight(W0, A, B, alpha=16, r=4)", rtol=1e-5, atol=1e-5)
    # The merged matrix computes the adapted layer: W x == W0 x + (alpha/r) B A x.
    x = torch.randn(d_in, 3, generator=g)
    expect_close(got @ x, W0 @ x + (alpha / r) * (B @ (A @ x)), "merged_weight(...) @ x", rtol=1e-4, atol=1e-4)


_CONFIGS = [
    ("deepseek-llm-7b", 8, ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
     "the 7B, all 7 projections, r = 8 (18.7M)"),
    ("deepseek-llm-67b", 8, ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
     "the 67B, all 7 projections, r = 8 (108M)"),
    ("deepseek-llm-67b", 4, ("k_proj", "v_proj"),
     "the 67B's k_proj and v_proj map 8,192 to 8 KV heads x 128 = 1,024 (grouped-query attention)"),
    ("deepseek-llm-7b", 16, ("down_proj",), "down_proj maps d_ff to d_model"),
]


@checker("lora_count")
def check_lora_count(fn) -> None:
    """fn(config, r, targets) -> trainable LoRA parameters, targets a tuple of projection names."""
    for preset, r, targets, why in _CONFIGS:
        config = ModelConfig.preset(preset)
        expect_equal(fn(config, r, targets), lora_param_count(config, r, targets),
                     f"lora_count({preset}, r={r}, {list(targets)}) ({why})")
