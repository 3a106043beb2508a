"""Grouped-query attention (GQA), with an explicit path for teaching and a fused path for speed.

Shapes use the paper's letters: b batch, t query positions, s key positions, h query heads,
k key/value heads, r = h / k query heads per key/value head, d head_dim.

    MHA: k = h (the 7B: 32 query heads, 32 KV heads)
    GQA: 1 < k < h (the 67B: 64 query heads share 8 KV heads, r = 8)
    MQA: k = 1

The projections have no bias. Keys and values are computed for k heads only (smaller k_proj/v_proj,
smaller KV cache) and repeated r times to line up with the query heads before the usual attention.
Query head j uses key/value head j // r, the order of Llama-format checkpoints.

Sliding windows (config.sliding_window = W, chapter 12): a windowed layer's query at position q sees only
the keys at q - W + 1 .. q (transformers' convention; see ModelConfig.layer_window for the other
conventions' off-by-one). Every path honours it:

    einsum       the explicit scores, masked with `sliding_window_mask` (the weights show the band)
    sdpa         SDPA with that boolean mask (runs anywhere; a dense mask leaves the flash kernel)
    flex         FlexAttention (torch >= 2.5): a block mask from the same rule, so blocks wholly outside the
                 band are never computed, and GQA without repeating k and v (compiled on CUDA; on a CPU it
                 runs its eager reference, which has no backward: training there goes through SDPA).
                 Without FlexAttention, "flex" falls back to "sdpa".
    one token    decoding: SDPA over the cache with the band as a mask, any impl but einsum
"""

from __future__ import annotations

import functools
import math
import warnings

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from .config import ModelConfig
from .kv_cache import KVCache
from .rope import apply_rope

try:  # torch >= 2.5
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    FLEX_AVAILABLE = True
except ImportError:  # older torch: impl "flex" falls back to SDPA with a boolean mask
    create_block_mask = flex_attention = None
    FLEX_AVAILABLE = False

ATTENTION_IMPLS = ("sdpa", "einsum", "flex")


def causal_mask(t: int, start: int, device=None) -> torch.Tensor:
    """Boolean (t, start + t) mask: query i (at position start + i) may see keys at positions <= start + i."""
    query_pos = torch.arange(start, start + t, device=device)[:, None]
    key_pos = torch.arange(start + t, device=device)[None, :]
    return key_pos <= query_pos


def band_mask(query_pos: torch.Tensor, key_pos: torch.Tensor, window: int | None) -> torch.Tensor:
    """Boolean (t, s): True where the query at query_pos[i] may see the key at key_pos[j].

    Causal (key_pos <= query_pos), inside the window (key_pos > query_pos - window; None = no window), and a
    real key (key_pos >= 0: a rolling cache marks its empty slots with -1). The keys need not be in order.
    """
    gap = query_pos[:, None] - key_pos[None, :]  # how far back each key lies
    visible = (gap >= 0) & (key_pos[None, :] >= 0)
    if window is not None:
        visible &= gap < window
    return visible


def key_padding_mask(pad: torch.Tensor, query_pos: torch.Tensor, key_pos: torch.Tensor) -> torch.Tensor:
    """Boolean (b, 1, t, s) for left-padded rows whose keys carry positions (a cache's): row b's keys at
    positions < pad[b] are padding and hidden; a padding query sees only itself (model.padding_mask's rule,
    for keys in any order)."""
    first = pad[:, None, None, None]  # (b, 1, 1, 1): each row's first real position
    keys, queries = key_pos[None, None, None, :], query_pos[None, None, :, None]
    return (keys >= first) | ((queries < first) & (keys == queries))


def sliding_window_mask(t: int, start: int, window: int | None, device=None) -> torch.Tensor:
    """Boolean (t, start + t) band: query i (position start + i) sees keys start + i - window + 1 .. start + i.

    The window counts the query itself (transformers' convention): window=1 sees only itself, and
    window >= start + t is `causal_mask`.
    """
    return band_mask(torch.arange(start, start + t, device=device), torch.arange(start + t, device=device), window)


def _band_rule(window: int | None):
    """The mask as FlexAttention's mask_mod(b, h, q_idx, kv_idx): the same rule as band_mask."""
    def mask_mod(b, h, q_idx, kv_idx):
        visible = kv_idx <= q_idx
        return visible & (kv_idx > q_idx - window) if window is not None else visible
    return mask_mod


@functools.lru_cache(maxsize=16)
def flex_block_mask(t: int, window: int | None, device: str):
    """FlexAttention's BlockMask for t queries over t keys at positions 0 .. t - 1, made once per (t, W, device).

    It records, per 128 x 128 tile, whether the tile is empty (skipped), full (no mask needed) or partial; a
    band of width W keeps about (W / 128 + 1) tiles per row of tiles instead of t / 256 on average for the
    causal triangle. Building it evaluates the rule on the whole (t, t) grid once, then every layer reuses it.
    Built outside inference mode even when first asked for inside it (generation), so that a later training
    step can save it for the backward pass.
    """
    with torch.inference_mode(False):
        return create_block_mask(_band_rule(window), None, None, t, t, device=device)


@functools.lru_cache(maxsize=None)
def _flex_kernel(device_type: str):
    """flex_attention compiled (the fused Triton kernel) on CUDA; its eager reference elsewhere.

    Compiled with dynamic shapes: the kernel takes the sequence length as an argument anyway, so one compile
    per mask rule (window or causal) and grad mode serves every length, instead of one per length. The
    recompile limit is raised all the same: past it torch would silently run the eager reference, which
    forms the whole (t, t) score matrix of every head.
    """
    if device_type == "cuda":
        from .recompile import allow_recompiles

        allow_recompiles(64)
        return torch.compile(flex_attention, dynamic=True)
    return flex_attention


def flex_usable(q: torch.Tensor) -> bool:
    """FlexAttention can run here: torch has it, and either the device is CUDA or no gradient is needed
    (its CPU reference has no backward in torch 2.13; there the "flex" impl trains through SDPA instead)."""
    return FLEX_AVAILABLE and (q.device.type == "cuda" or not (torch.is_grad_enabled() and q.requires_grad))


def flex_window_attention(q, k, v, window: int | None) -> torch.Tensor:
    """FlexAttention over positions 0 .. t - 1 with the band (or causal) block mask. q: (b, h, t, d);
    k, v: (b, k, t, d), not repeated: enable_gqa lets query head j read key/value head j // r."""
    if not FLEX_AVAILABLE:
        raise RuntimeError(f"FlexAttention needs torch >= 2.5; this is torch {torch.__version__}")
    block_mask = flex_block_mask(q.shape[2], window, str(q.device))
    with warnings.catch_warnings():  # the eager CPU reference warns that it is not compiled: that is intended
        warnings.filterwarnings("ignore", message=".*flex_attention.*")
        return _flex_kernel(q.device.type)(q, k, v, block_mask=block_mask, enable_gqa=q.shape[1] != k.shape[1])


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
        self.window = config.layer_window(layer_idx)  # None: full causal attention
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
        if value == "flex" and not FLEX_AVAILABLE:
            _warn_no_flex()
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
        if self.window is not None:
            return self._windowed(x, cos, sin, kv_cache, need_weights, mask)
        # region: readable (chapter 03; the other branches are taught in chapters 07 and 12)
        start = kv_cache.length if kv_cache is not None else 0
        q = rearrange(self.q_proj(x), "b t (h d) -> b h t d", h=self.n_heads)
        k = rearrange(self.k_proj(x), "b t (k d) -> b k t d", k=self.n_kv_heads)
        v = rearrange(self.v_proj(x), "b t (k d) -> b k t d", k=self.n_kv_heads)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv_cache is not None:  # the cache stores k heads, not h: that is GQA's memory saving
            k, v = kv_cache.update(self.layer_idx, k, v)  # now (b, k, s, d) with s = start + t

        t = x.shape[1]
        weights = None
        # endregion
        if self.impl == "flex" and flex_usable(q) and start == 0 and t > 1 and mask is None and not need_weights:
            out = flex_window_attention(q, k, v, None)  # full causal through FlexAttention (for comparisons)
        elif t == 1 and self.impl != "einsum" and not need_weights:
            # one new token: no copy of the cache, and no mask unless some keys are padding
            out = decode_attention(q, k, v, mask=mask)  # a (b, 1, 1, s) mask broadcasts over (b, k, r, s)
        else:
            # region: readable (the explicit path: repeat the KV heads, then einsum attention)
            # Repeat each key/value head for the r query heads of its group.
            k = repeat(k, "b k s d -> b (k r) s d", r=self.n_rep)
            v = repeat(v, "b k s d -> b (k r) s d", r=self.n_rep)
            if self.impl == "einsum" or need_weights:
                out, weights = einsum_attention(q, k, v, causal_mask(t, start, device=x.device) if mask is None else mask)
            # endregion
            elif mask is not None:
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            elif start == 0:
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:  # a chunk after a cached prefix; is_causal would align the mask to the wrong corner
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(t, start, device=x.device))
        # region: readable
        out = self.o_proj(rearrange(out, "b h t d -> b t (h d)"))
        return (out, weights) if need_weights else out
        # endregion

    def _windowed(self, x, cos, sin, kv_cache, need_weights: bool, mask: torch.Tensor | None = None):
        """forward() of a sliding-window layer: the same projections, attention restricted to the band.

        With a cache, the keys come back with their positions (a rolling cache keeps them in slot order,
        not position order), and the band is computed from those positions: attention does not care in
        which order the keys are stored, only which of them each query may see. Left-padded rows (`mask`,
        model.padding_mask) also hide their padding keys: through the model's mask when the keys are this
        chunk's own, through the padding the cache remembers (its `pad`) when they come from a cache.
        """
        t = x.shape[1]
        start = kv_cache.length if kv_cache is not None else 0
        q = rearrange(self.q_proj(x), "b t (h d) -> b h t d", h=self.n_heads)
        k = rearrange(self.k_proj(x), "b t (k d) -> b k t d", k=self.n_kv_heads)
        v = rearrange(self.v_proj(x), "b t (k d) -> b k t d", k=self.n_kv_heads)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        pad = None
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)  # (b, k, s, d)
            key_pos = kv_cache.key_positions(self.layer_idx, t)  # (s,): the position of each returned key
            pad = kv_cache.pad  # (b,) or None: set by a padded prefill
        else:
            key_pos = torch.arange(t, device=x.device)

        weights = None
        in_order = start == 0 and k.shape[2] == t  # keys are exactly positions 0 .. t - 1
        if self.impl == "flex" and flex_usable(q) and in_order and t > 1 and mask is None and not need_weights:
            return self.o_proj(rearrange(flex_window_attention(q, k, v, self.window), "b h t d -> b t (h d)"))
        # Every other path takes a dense (1 or b, 1, t, s) mask; FlexAttention never forms it (4 GiB at 64K).
        query_pos = torch.arange(start, start + t, device=x.device)
        visible = band_mask(query_pos, key_pos, self.window)[None, None]
        if pad is not None:
            visible = visible & key_padding_mask(pad, query_pos, key_pos)
        elif mask is not None:
            visible = visible & mask  # the model's padding mask, over these same t keys
        if t == 1 and self.impl != "einsum" and not need_weights:
            out = decode_attention(q, k, v, mask=visible)  # (1 or b, 1, 1, s) broadcasts over (b, k, r, s)
        else:
            k = repeat(k, "b k s d -> b (k r) s d", r=self.n_rep)
            v = repeat(v, "b k s d -> b (k r) s d", r=self.n_rep)
            if self.impl == "einsum" or need_weights:
                out, weights = einsum_attention(q, k, v, visible)
            else:
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=visible)
        out = self.o_proj(rearrange(out, "b h t d -> b t (h d)"))
        return (out, weights) if need_weights else out


@functools.lru_cache(maxsize=None)
def _warn_no_flex() -> None:
    warnings.warn(f"attention impl 'flex' needs FlexAttention (torch >= 2.5); torch {torch.__version__} lacks it, "
                  "so 'flex' runs SDPA with a boolean mask instead", stacklevel=3)
