"""One decoder layer: pre-norm attention and pre-norm FFN, each added to the residual stream.

    h = x + Attention(RMSNorm(x))
    y = h + FFN(RMSNorm(h))

Normalising the input of each block (pre-norm) rather than its output leaves the residual stream itself
untouched, so the identity path from the last layer back to the first carries gradients unchanged: this is
what lets a 95-layer stack train. DeepSeek LLM 67B stacks 95 of these; the 7B stacks 30. In a DeepSeekMoE
config the FFN of every layer past the first `first_dense_layers` is the mixture of experts (moe.py).
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import GroupedQueryAttention
from .config import ModelConfig
from .ffn import SwiGLU
from .kv_cache import KVCache
from .mla import MultiHeadLatentAttention
from .moe import DeepSeekMoE, DeepSeekV3MoE
from .norm import RMSNorm


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int = 0, attn_impl: str = "sdpa", device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.input_layernorm = RMSNorm(config.d_model, config.norm_eps, **kw)
        attention = MultiHeadLatentAttention if config.is_mla else GroupedQueryAttention  # mla.py: V2/V3
        self.self_attn = attention(config, layer_idx, attn_impl, **kw)
        self.post_attention_layernorm = RMSNorm(config.d_model, config.norm_eps, **kw)
        moe = config.is_moe_layer(layer_idx)
        moe_block = DeepSeekV3MoE if config.is_mla else DeepSeekMoE  # V2/V3's router beside DeepSeekMoE's
        self.mlp = moe_block(config, **kw) if moe else SwiGLU(config.d_model, config.d_ff, **kw)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        kv_cache: KVCache | None = None,
        need_weights: bool = False,
        mask: torch.Tensor | None = None,
    ):
        attn = self.self_attn(self.input_layernorm(x), cos, sin, kv_cache, need_weights=need_weights, mask=mask)
        attn, weights = attn if need_weights else (attn, None)
        h = x + attn
        y = h + self.mlp(self.post_attention_layernorm(h))
        return (y, weights) if need_weights else y
