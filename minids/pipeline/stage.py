"""One pipeline stage: a contiguous slice of DeepSeekLM's decoder layers, built with nothing else.

    first stage:   ids (b, t)  -> embed_tokens -> layers[start:stop] -> hidden (b, t, d_model)
    middle stage:  hidden      -> layers[start:stop]                 -> hidden
    last stage:    hidden      -> layers[start:stop] -> norm -> lm_head -> logits (b, t, vocab_size)

The layers sit in an nn.ModuleDict keyed by their index in the whole model, so a stage's parameter names
are exactly the single model's ("layers.47.mlp.up_proj.weight"): checking a stage against DeepSeekLM is a
lookup by name, and a checkpoint loads into a stage by filtering names.

Weights without the whole model: each rank builds only its stage (on the meta device, then allocated on
its own device), and `init_by_name` draws every tensor from a random generator seeded by the tensor's
*name*. The same name gets the same numbers whichever module holds it, so stage k's weights equal the
single-process model's layers[start:stop] (on the same kind of device) without any rank ever holding the
whole 67B.
"""

from __future__ import annotations

import zlib

import torch
from torch import nn

from ..config import ModelConfig
from ..layer import DecoderLayer
from ..norm import RMSNorm
from ..rope import RotaryEmbedding


class StageModule(nn.Module):
    def __init__(self, config: ModelConfig, layers: range, is_first: bool, is_last: bool,
                 attn_impl: str = "sdpa", dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if len(layers) == 0 or layers.step != 1 or layers.start < 0 or layers.stop > config.n_layers:
            raise ValueError(f"a stage needs a non-empty contiguous range inside 0..{config.n_layers - 1}, got {layers}")
        self.config, self.layer_range, self.is_first, self.is_last = config, layers, is_first, is_last
        kw = dict(device="meta", dtype=dtype)  # shapes only; `materialize` allocates
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model, **kw) if is_first else None
        self.layers = nn.ModuleDict(
            {str(i): DecoderLayer(config, layer_idx=i, attn_impl=attn_impl, **kw) for i in layers}
        )
        self.norm = RMSNorm(config.d_model, config.norm_eps, **kw) if is_last else None
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False, **kw) if is_last else None
        self.rope = RotaryEmbedding(config.head_dim, config.rope_theta, config.max_seq_len)

    def materialize(self, device, seed: int = 0) -> "StageModule":
        """Allocate this stage's weights on `device` and fill them with `init_by_name(self, seed)`."""
        self.to_empty(device=device)
        init_by_name(self, seed)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ids (b, t) on the first stage, the residual stream (b, t, d_model) elsewhere."""
        if self.is_first:
            x = self.embed_tokens(x)
        cos, sin = self.rope(torch.arange(x.shape[1], device=x.device))  # every stage rebuilds its own
        for layer in self.layers.values():
            x = layer(x, cos, sin)
        if self.is_last:
            x = self.lm_head(self.norm(x))
        return x


def build_stage(config: ModelConfig, ranges: list[range], stage: int, device, dtype=None, seed: int = 0,
                attn_impl: str = "sdpa") -> StageModule:
    """Stage `stage` of the partition `ranges`, with its weights on `device` (and only its weights)."""
    module = StageModule(config, ranges[stage], stage == 0, stage == len(ranges) - 1, attn_impl, dtype)
    return module.materialize(device, seed)


def name_seed(seed: int, name: str) -> int:
    """A reproducible 63-bit seed for the tensor called `name` (crc32 is stable across runs, unlike hash())."""
    return (seed * 0x9E3779B1 + zlib.crc32(name.encode())) % (2**63 - 1)


@torch.no_grad()
def init_by_name(module: nn.Module, seed: int = 0, std: float | None = None) -> None:
    """The paper's init (matrices ~ N(0, 0.006), RMSNorm gains 1), each matrix drawn from its own generator
    seeded by (seed, parameter name): identical numbers for the same name in any module on the same device type.

    Works for DeepSeekLM and StageModule alike, since their parameter names agree.
    """
    config = getattr(module, "config", None)
    std = std if std is not None else (config.init_std if config is not None else 0.006)
    for name, param in module.named_parameters():
        if name.endswith("layernorm.weight") or name == "norm.weight":
            param.fill_(1.0)
            continue
        gen = torch.Generator(device=param.device)
        gen.manual_seed(name_seed(seed, name))
        param.normal_(0.0, std, generator=gen)
