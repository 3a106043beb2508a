"""Grouped-query attention (GQA), with an explicit path for teaching and a fused path for speed.

Shapes use the paper's letters: b batch, t query positions, s key positions, h query heads,
k key/value heads, r = h / k query heads per key/value head, d head_dim.

    MHA: k = h (the 7B: 32 query heads, 32 KV heads)
    GQA: 1 < k < h (the 67B: 64 query heads share 8 KV heads, r = 8)
    MQA: k = 1

The projections have no bias. Keys and values are computed for k heads only (smaller k_proj/v_proj,
smaller KV cache) and repeated r times to line up with the query heads before the usual attention.
Query head j uses key/value head j // r, the order of Llama-format checkpoints.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from .config import ModelConfig
from .kv_cache import KVCache
from .rope import apply_rope

ATTENTION_IMPLS = ("sdpa", "einsum")


def causal_mask(t: int, start: int, device=None) -> torch.Tensor:
    """Boolean (t, start + t) mask: query i (at position start + i) may see keys at positions <= start + i."""
    query_pos = torch.arange(start, start + t, device=device)[:, None]
    key_pos = torch.arange(start + t, device=device)[None, :]
    return key_pos <= query_pos


def einsum_attention(q, k, v, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(d)) v, written out. q: (b, h, t, d); k, v: (b, h, s, d). Returns (out, weights)."""
    scores = torch.einsum("bhtd,bhsd->bhts", q, k) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.float().softmax(dim=-1).to(q.dtype)  # softmax in float32, as the reference does
    return torch.einsum("bhts,bhsd->bhtd", weights, v), weights


def grouped_einsum_decode(q, k, v, mask: torch.Tensor | None = None) -> torch.Tensor:
    """decode_attention written out: the r query heads of a group as r rows against their one KV head.

    q: (b, h, 1, d); k, v: (b, k, s, d). Two batched products, (r x d) @ (d x s) and (r x s) @ (s x d) per
    (b, k), that read each cached key and value once; the (b, k, r, s) scores are small (s numbers per query
    head). Same function as decode_attention; which one is faster depends on the kernels: a fused attention
    kernel that parallelises over (b, k) only has few blocks when k is small (GQA) and s long, while batched
    matrix products split the s axis across the GPU (benchmarks/bench_batched_decode.py measures both).
    """
    r = q.shape[1] // k.shape[1]
    q_groups = rearrange(q, "b (k r) 1 d -> b k r d", r=r)
    scores = torch.einsum("bkrd,bksd->bkrs", q_groups, k) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.float().softmax(dim=-1).to(q.dtype)
    return rearrange(torch.einsum("bkrs,bksd->bkrd", weights, v), "b k r d -> b (k r) 1 d")


def decode_attention(q, k, v, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Attention of ONE new token per sequence, without repeating the cached keys and values.

    q: (b, h, 1, d); k, v: (b, k, s, d) as the cache stores them. The r query heads of a group all look at
    the same key/value head, so they are regrouped as r queries of one head: (b, k, r, d) against
    (b, k, s, d). This is the same function as repeating k and v r times, but it reads the cache once
    instead of copying it r times per layer and step (the copy grows with s; for the 67B, r = 8).
    mask: optional boolean, broadcastable to (b, k, r, s), True where a key may be seen.
    """
    r = q.shape[1] // k.shape[1]
    q_groups = rearrange(q, "b (k r) 1 d -> b k r d", r=r)
    out = F.scaled_dot_product_attention(q_groups, k, v, attn_mask=mask)
    return rearrange(out, "b k r d -> b (k r) 1 d")


class GroupedQueryAttention(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int = 0, impl: str = "sdpa", device=None, dtype=None):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, config.head_dim
        self.n_rep = config.n_rep
        self.layer_idx = layer_idx  # which slot of a KVCache this layer writes
        self.impl = impl
        kw = dict(bias=False, device=device, dtype=dtype)
        self.q_proj = nn.Linear(config.d_model, config.n_heads * config.head_dim, **kw)
        self.k_proj = nn.Linear(config.d_model, config.n_kv_heads * config.head_dim, **kw)
        self.v_proj = nn.Linear(config.d_model, config.n_kv_heads * config.head_dim, **kw)
        self.o_proj = nn.Linear(config.n_heads * config.head_dim, config.d_model, **kw)

    @property
    def impl(self) -> str:
        return self._impl

    @impl.setter
    def impl(self, value: str) -> None:
        if value not in ATTENTION_IMPLS:
            raise ValueError(f"attention impl {value!r} is not one of {ATTENTION_IMPLS}")
        self._impl = value

    def forward(
        self,
        x: torch.Tensor,  # (b, t, d_model)
        cos: torch.Tensor,  # (t, d) for the positions of x
        sin: torch.Tensor,
        kv_cache: KVCache | None = None,
        need_weights: bool = False,
        mask: torch.Tensor | None = None,
    ):
        """Returns the output (b, t, d_model), or (output, weights (b, h, t, s)) when need_weights is set.

        need_weights always takes the explicit einsum path, since the fused kernel never forms the weights.
        mask: optional boolean (b, 1, t, s), True where a query may see a key, replacing the causal mask (a
        batch of left-padded prompts: see model.padding_mask); cos and sin are then (b, 1, t, d), per row.
        """
        start = kv_cache.length if kv_cache is not None else 0
        q = rearrange(self.q_proj(x), "b t (h d) -> b h t d", h=self.n_heads)
        k = rearrange(self.k_proj(x), "b t (k d) -> b k t d", k=self.n_kv_heads)
        v = rearrange(self.v_proj(x), "b t (k d) -> b k t d", k=self.n_kv_heads)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv_cache is not None:  # the cache stores k heads, not h: that is GQA's memory saving
            k, v = kv_cache.update(self.layer_idx, k, v)  # now (b, k, s, d) with s = start + t

        t = x.shape[1]
        weights = None
        if t == 1 and self.impl == "sdpa" and not need_weights:
            # one new token: no copy of the cache, and no mask unless some keys are padding
            out = decode_attention(q, k, v, mask=mask)  # a (b, 1, 1, s) mask broadcasts over (b, k, r, s)
        else:
            # Repeat each key/value head for the r query heads of its group.
            k = repeat(k, "b k s d -> b (k r) s d", r=self.n_rep)
            v = repeat(v, "b k s d -> b (k r) s d", r=self.n_rep)
            if self.impl == "einsum" or need_weights:
                out, weights = einsum_attention(q, k, v, causal_mask(t, start, device=x.device) if mask is None else mask)
            elif mask is not None:
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            elif start == 0:
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:  # a chunk after a cached prefix; is_causal would align the mask to the wrong corner
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(t, start, device=x.device))
        out = self.o_proj(rearrange(out, "b h t d -> b t (h d)"))
        return (out, weights) if need_weights else out
