"""Multi-head latent attention (MLA): DeepSeek-V2 and V3's attention (arXiv 2405.04434 section 2.1; 2412.19437).

GQA shrinks the KV cache by sharing keys and values between query heads (the 67B: 8 KV heads for 64 query
heads, 380 KiB per token). MLA caches something else: one compressed latent per token,

    c_KV = RMSNorm(W_DKV h)                  (d_c = kv_lora_rank = 512 numbers)
    k_R  = RoPE(W_KR h)                      (d_h^R = qk_rope_head_dim = 64, ONE key shared by all heads)

and rebuilds every head's keys and values from it:  k_C,i = W_UK,i c_KV (d_h = 128), v_i = W_UV,i c_KV (128).
V3 caches 512 + 64 = 576 numbers per token and layer: 61 x 576 x 2 bytes = 70,272 bytes (68.6 KiB) in bf16.

Queries: q_C,i = W_UQ,i c_Q and q_R,i = RoPE(W_QR,i c_Q), with c_Q = RMSNorm(W_DQ h) (q_lora_rank 1536 in V3;
V2-Lite has no c_Q and one q_proj). Head i's score is [q_C,i; q_R,i] . [k_C,i; k_R] / sqrt(d_h + d_h^R).

Why RoPE is decoupled. If the rotation were applied to k_C = W_UK c_KV, then q . k = q^T R(m)^T R(n) W_UK c_KV
= q^T R(n - m) W_UK c_KV (up to convention): the matrix between the query and the cached c_KV depends on the
distance, so W_UK could no longer be folded into the query (below). MLA leaves k_C unrotated and carries
position in a separate small key k_R instead.

Why absorption makes decoding cheap. q_C,i . k_C,i = q_C,i . (W_UK,i c_KV) = (W_UK,i^T q_C,i) . c_KV: fold W_UK
into the query once per new token and score it directly against the cached latents; likewise
sum_s p_s (W_UV,i c_s) = W_UV,i (sum_s p_s c_s): attend in latent space and decompress once, after. Decoding
then reads 576 numbers per cached token for all heads together (one shared "KV head" of 512 + 64), instead of
decompressing every cached latent into h x (128 + 128) numbers at every step.

Two paths, one function (tests/test_mla.py checks they agree, and both against transformers):

    "decompressed"  the readable one: keys and values per head from c_KV, then ordinary attention
    "absorbed"      W_UK folded into the query, W_UV applied after attention, attention against c_KV
    "auto"          absorbed when decoding one token against a cache, decompressed otherwise (default)

Checkpoint names (transformers' DeepseekV3Attention / DeepseekV2Attention):

| checkpoint             | paper               | shape (out, in)                                   |
|------------------------|---------------------|---------------------------------------------------|
| q_a_proj               | W_DQ                | (d_c', d_model)                                   |
| q_a_layernorm          | RMSNorm on c_Q      | (d_c',)                                           |
| q_b_proj (or q_proj)   | [W_UQ; W_QR] per head| (h x (d_h + d_h^R), d_c' or d_model)              |
| kv_a_proj_with_mqa     | [W_DKV; W_KR]       | (d_c + d_h^R, d_model)                            |
| kv_a_layernorm         | RMSNorm on c_KV     | (d_c,)                                            |
| kv_b_proj              | [W_UK; W_UV] per head| (h x (d_h + d_v), d_c)                            |
| o_proj                 | W_O                 | (d_model, h x d_v)                                |

Letters in shapes: b batch, t new tokens, s cached positions, h heads, n = d_h (no position), r = d_h^R,
c = d_c, v = v_head_dim.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import einsum, rearrange, repeat
from torch import nn

from .attention import ATTENTION_IMPLS, causal_mask
from .config import ModelConfig
from .norm import RMSNorm
from .rope import apply_rope, interleaved_to_rotate_half

MLA_PATHS = ("auto", "decompressed", "absorbed")
# transformers builds q_a_layernorm and kv_a_layernorm with RMSNorm's default eps, whatever rms_norm_eps says.
LATENT_NORM_EPS = 1e-6


class MultiHeadLatentAttention(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int = 0, impl: str = "sdpa", device=None, dtype=None):
        super().__init__()
        if not config.is_mla:
            raise ValueError("MultiHeadLatentAttention needs a config with kv_lora_rank set (multi-head latent "
                             "attention); this one is GQA")
        self.n_heads, self.layer_idx = config.n_heads, layer_idx
        self.d_c, self.d_cq = config.kv_lora_rank, config.q_lora_rank
        self.d_nope, self.d_rope, self.d_v = config.qk_nope_head_dim, config.qk_rope_head_dim, config.v_head_dim
        self.rope_interleave = config.rope_interleave
        yarn = config.rope_scaling
        # 1 / sqrt(d_h + d_h^R), times YaRN's mscale(factor, mscale_all_dim)^2 when the context is stretched
        self.softmax_scale = config.qk_head_dim ** -0.5 * (yarn.softmax_factor if yarn is not None else 1.0)
        self.impl, self.path = impl, "auto"
        kw = dict(bias=False, device=device, dtype=dtype)
        h, d = config.n_heads, config.d_model
        if self.d_cq is None:
            self.q_proj = nn.Linear(d, h * config.qk_head_dim, **kw)
        else:
            self.q_a_proj = nn.Linear(d, self.d_cq, **kw)  # W_DQ
            self.q_a_layernorm = RMSNorm(self.d_cq, LATENT_NORM_EPS, device=device, dtype=dtype)
            self.q_b_proj = nn.Linear(self.d_cq, h * config.qk_head_dim, **kw)  # [W_UQ; W_QR], per head
        self.kv_a_proj_with_mqa = nn.Linear(d, self.d_c + self.d_rope, **kw)  # [W_DKV; W_KR]
        self.kv_a_layernorm = RMSNorm(self.d_c, LATENT_NORM_EPS, device=device, dtype=dtype)
        self.kv_b_proj = nn.Linear(self.d_c, h * (self.d_nope + self.d_v), **kw)  # [W_UK; W_UV], per head
        self.o_proj = nn.Linear(h * self.d_v, d, **kw)  # W_O

    @property
    def impl(self) -> str:
        return self._impl

    @impl.setter
    def impl(self, value: str) -> None:
        if value not in ATTENTION_IMPLS:
            raise ValueError(f"attention impl {value!r} is not one of {ATTENTION_IMPLS}")
        self._impl = value  # "flex" runs as "sdpa" here: MLA has no sliding window to skip

    @property
    def path(self) -> str:
        return self._path

    @path.setter
    def path(self, value: str) -> None:
        if value not in MLA_PATHS:
            raise ValueError(f"MultiHeadLatentAttention.path must be one of {MLA_PATHS}, got {value!r}")
        self._path = value

    # ---- the pieces -------------------------------------------------------------------------------------
    def queries(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q_C (b, h, t, n) and q_R (b, h, t, r) before RoPE."""
        if self.d_cq is None:
            q = self.q_proj(x)
        else:
            c_q = self.q_a_layernorm(self.q_a_proj(x))  # (b, t, d_c'): the query latent
            q = self.q_b_proj(c_q)
        q = rearrange(q, "b t (h d) -> b h t d", h=self.n_heads)
        q_c, q_r = q.split([self.d_nope, self.d_rope], dim=-1)
        return q_c, q_r

    def latent(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """c_KV (b, t, c), normalised, and the shared RoPE key (b, t, r) before RoPE: all a cache keeps."""
        c_kv, k_r = self.kv_a_proj_with_mqa(x).split([self.d_c, self.d_rope], dim=-1)
        return self.kv_a_layernorm(c_kv), k_r

    def rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """RoPE on (..., t, r). DeepSeek's checkpoints pair channels (2i, 2i+1) (`rope_interleave`): gathering the
        even channels before the odd ones turns that into the rotate-half layout rope.py uses. Queries and keys
        get the same permutation, so their dot products are unchanged by it."""
        if self.rope_interleave:
            x = x[..., interleaved_to_rotate_half(self.d_rope).to(x.device)]
        return apply_rope(x, cos, sin)

    def up_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """W_UK (h, n, c) and W_UV (h, v, c): kv_b_proj's rows, head by head."""
        w = rearrange(self.kv_b_proj.weight, "(h d) c -> h d c", h=self.n_heads)
        w_uk, w_uv = w.split([self.d_nope, self.d_v], dim=1)
        return w_uk, w_uv

    # ---- forward ----------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv_cache=None,
                need_weights: bool = False, mask: torch.Tensor | None = None):
        """(b, t, d_model) -> (b, t, d_model), or (output, weights (b, h, t, s)) with need_weights; the same
        arguments as GroupedQueryAttention.forward (cos, sin: (t, r) or (b, 1, t, r) for padded rows)."""
        b, t, _ = x.shape
        start = kv_cache.length if kv_cache is not None else 0
        q_c, q_r = self.queries(x)
        c_kv, k_r = self.latent(x)
        q_r = self.rope(q_r, cos, sin)
        k_r = self.rope(k_r[:, None], cos, sin)[:, 0]  # one head, shared: (b, t, r)
        if kv_cache is not None:  # the cache keeps only c_KV and k_R: (b, s, c) and (b, s, r)
            c_kv, k_r = kv_cache.update(self.layer_idx, c_kv, k_r)
        if mask is None and (t > 1 or need_weights or self.impl == "einsum"):
            mask = causal_mask(t, start, device=x.device)[None, None]  # (1, 1, t, s)
        absorbed = self.path == "absorbed" or (self.path == "auto" and kv_cache is not None and t == 1)
        attend = self.attend_absorbed if absorbed else self.attend_decompressed
        out, weights = attend(q_c, q_r, c_kv, k_r, mask, need_weights)
        out = self.o_proj(rearrange(out, "b h t v -> b t (h v)"))
        return (out, weights) if need_weights else out

    def attend_decompressed(self, q_c, q_r, c_kv, k_r, mask, need_weights=False):
        """The readable path: every head's keys [k_C; k_R] and values from the latents, then attention.

        Reads the s cached latents and multiplies each by kv_b_proj: h x (n + v) numbers per cached token are
        formed at every step, which is what absorption avoids."""
        kv = rearrange(self.kv_b_proj(c_kv), "b s (h d) -> b h s d", h=self.n_heads)
        k_c, v = kv.split([self.d_nope, self.d_v], dim=-1)  # (b, h, s, n), (b, h, s, v)
        k = torch.cat([k_c, repeat(k_r, "b s r -> b h s r", h=self.n_heads)], dim=-1)  # (b, h, s, n + r)
        q = torch.cat([q_c, q_r], dim=-1)  # (b, h, t, n + r)
        if self.impl == "einsum" or need_weights:
            scores = einsum(q, k, "b h t d, b h s d -> b h t s") * self.softmax_scale
            return self._weighted(scores, v, mask, "b h t s, b h s v -> b h t v")
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.softmax_scale), None

    def attend_absorbed(self, q_c, q_r, c_kv, k_r, mask, need_weights=False):
        """Attention against the cached latents: W_UK folded into the query, W_UV applied after.

        scores = (W_UK^T q_C) . c_KV + q_R . k_R; out = W_UV (sum_s p_s c_s). All heads read the same
        (s, c + r) latents: one shared KV head of 576, like MQA with a wide head."""
        w_uk, w_uv = self.up_weights()
        q_lat = einsum(q_c, w_uk, "b h t n, h n c -> b h t c")  # the query in latent space
        if self.impl == "einsum" or need_weights:
            scores = (einsum(q_lat, c_kv, "b h t c, b s c -> b h t s")
                      + einsum(q_r, k_r, "b h t r, b s r -> b h t s")) * self.softmax_scale
            o_lat, weights = self._weighted(scores, c_kv, mask, "b h t s, b s c -> b h t c")
        else:  # one fused kernel: the h x t queries as rows against one shared key/value head
            h, t = q_lat.shape[1], q_lat.shape[2]
            q = rearrange(torch.cat([q_lat, q_r], dim=-1), "b h t e -> b 1 (h t) e")
            k = torch.cat([c_kv, k_r], dim=-1)[:, None]  # (b, 1, s, c + r)
            rows = None if mask is None else repeat(mask, "b 1 t s -> b 1 (h t) s", h=h)
            o_lat = F.scaled_dot_product_attention(q, k, c_kv[:, None], attn_mask=rows, scale=self.softmax_scale)
            o_lat, weights = rearrange(o_lat, "b 1 (h t) c -> b h t c", h=h, t=t), None
        return einsum(o_lat, w_uv, "b h t c, h v c -> b h t v"), weights

    @staticmethod
    def _weighted(scores, values, mask, pattern):
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = scores.float().softmax(dim=-1).to(values.dtype)  # softmax in float32, as the reference does
        return einsum(weights, values, pattern), weights

    def extra_repr(self) -> str:
        return (f"heads={self.n_heads}, d_c={self.d_c}, d_c'={self.d_cq}, d_h={self.d_nope}, d_h^R={self.d_rope}, "
                f"d_v={self.d_v}, scale={self.softmax_scale:.4g}, path={self.path}, impl={self.impl}")


def mla_cache_numbers_per_token(config: ModelConfig) -> int:
    """Numbers one layer caches per token: d_c + d_h^R for MLA (576 in V2/V3), 2 x n_kv_heads x head_dim for GQA."""
    if config.is_mla:
        return config.kv_lora_rank + config.qk_rope_head_dim
    return 2 * config.n_kv_heads * config.head_dim


def softmax_scale(config: ModelConfig) -> float:
    """1 / sqrt(qk_head_dim), times YaRN's softmax factor: what MultiHeadLatentAttention multiplies scores by."""
    yarn = config.rope_scaling
    return (1 / math.sqrt(config.qk_head_dim)) * (yarn.softmax_factor if yarn is not None else 1.0)
