"""Parameter, memory and FLOP accounting from the config alone (no weights needed).

Every count here is a formula over the config; the tests check each against the module's own
`sum(p.numel() for p in model.parameters())` on the meta device for every preset.

For a DeepSeekMoE config, `total` counts every expert and `active` only what one token uses (the router,
the shared experts and its k routed experts in each MoE layer); FLOPs per token follow `active`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .config import ModelConfig


@dataclass(frozen=True)
class ParamCount:
    embedding: int  # vocab_size * d_model
    attention: int  # all layers: q, o (d_model x d_model each) and k, v (d_model x n_kv_heads*head_dim each)
    ffn: int  # all layers: gate, up, down (d_model x d_ff each); in MoE layers router + all experts
    norms: int  # two RMSNorm gains per layer + the final one
    lm_head: int  # d_model * vocab_size (untied)
    per_layer: int  # attention + ffn + norms of one decoder layer (the first one, dense, in an MoE model)
    active_ffn: int | None = None  # FFN weights one token uses (None: all of ffn, a dense model)
    routed_experts: int = 0  # all routed experts of all MoE layers (part of ffn)

    @property
    def non_embedding(self) -> int:
        """Everything but the embedding and the lm_head (the N of Kaplan et al. 2020)."""
        return self.attention + self.ffn + self.norms

    @property
    def total(self) -> int:
        return self.embedding + self.non_embedding + self.lm_head

    @property
    def active(self) -> int:
        """Parameters used for one token, embedding and lm_head included (= total for a dense model)."""
        return self.total - self.ffn + (self.ffn if self.active_ffn is None else self.active_ffn)

    @property
    def active_non_embedding(self) -> int:
        return self.active - self.embedding - self.lm_head

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "non_embedding": self.non_embedding, "total": self.total, "active": self.active,
                "active_non_embedding": self.active_non_embedding}


def attention_params_per_layer(config: ModelConfig) -> int:
    if config.is_mla:
        return mla_params_per_layer(config)
    d, kv = config.d_model, config.n_kv_heads * config.head_dim
    return 2 * d * d + 2 * d * kv  # q_proj + o_proj, k_proj + v_proj


def mla_params_per_layer(config: ModelConfig) -> int:
    """Multi-head latent attention's weights in one layer (mla.py's table): the query path (q_a_proj, its norm,
    q_b_proj; or one q_proj), kv_a_proj_with_mqa (d -> d_c + d_h^R), kv_a_layernorm, kv_b_proj (d_c -> h (d_h + d_v))
    and o_proj (h d_v -> d)."""
    d, h, c, cq = config.d_model, config.n_heads, config.kv_lora_rank, config.q_lora_rank
    q = d * h * config.qk_head_dim if cq is None else d * cq + cq + cq * h * config.qk_head_dim
    kv = d * (c + config.qk_rope_head_dim) + c + c * h * (config.qk_nope_head_dim + config.v_head_dim)
    return q + kv + h * config.v_head_dim * d


def ffn_params_per_layer(config: ModelConfig) -> int:
    return 3 * config.d_model * config.d_ff  # gate_proj, up_proj, down_proj (a dense layer)


def moe_params_per_layer(config: ModelConfig) -> tuple[int, int]:
    """(all, active per token) weights of one DeepSeekMoE FFN: router d x E, E routed experts and the shared
    SwiGLU of width K_s * moe_d_ff; a token uses the router, the shared experts and k routed experts."""
    d, f = config.d_model, config.moe_d_ff or 0
    router, expert, shared = d * config.n_routed_experts, 3 * d * f, 3 * d * config.n_shared_experts * f
    return router + config.n_routed_experts * expert + shared, router + config.n_experts_per_token * expert + shared


def count_params(config: ModelConfig) -> ParamCount:
    """The parameter breakdown of DeepSeekLM(config), from the formulas.

    >>> count_params(ModelConfig.preset("deepseek-llm-67b")).total
    67425001472
    >>> p = count_params(ModelConfig.preset("deepseek-moe-16b")); p.total, p.active
    (16375728128, 2828650496)
    """
    L, n_moe = config.n_layers, config.n_moe_layers
    attn, ffn, norms = attention_params_per_layer(config), ffn_params_per_layer(config), 2 * config.d_model
    moe, moe_active = moe_params_per_layer(config)
    first_ffn = moe if config.is_moe_layer(0) else ffn
    return ParamCount(
        embedding=config.vocab_size * config.d_model,
        attention=L * attn,
        ffn=(L - n_moe) * ffn + n_moe * moe,
        norms=L * norms + config.d_model,
        lm_head=config.d_model * config.vocab_size,
        per_layer=attn + first_ffn + norms,
        active_ffn=(L - n_moe) * ffn + n_moe * moe_active,
        routed_experts=n_moe * config.n_routed_experts * 3 * config.d_model * (config.moe_d_ff or 0),
    )


def kv_cache_bytes(config: ModelConfig, seq_len: int, batch: int = 1, dtype: torch.dtype = torch.bfloat16,
                   window: int | None = None) -> int:
    """Bytes of a KV cache for seq_len positions: 2 (K and V) * n_kv_heads * head_dim * batch * element size,
    times the positions each layer keeps, summed over the layers.

    A full-attention layer keeps all seq_len positions; a sliding-window layer keeps min(seq_len, W), the
    rolling buffer (rolling_cache.py). So with a window the cache stops growing at W positions: the 67B at
    128K tokens holds 47.5 GiB per sequence with full attention and 1.48 GiB with W = 4096 in every layer.
    window: price the config as if its windowed layers (every layer, if it has none) used this W, i.e.
    config.replace(sliding_window=window); None prices the config as it is.
    """
    if seq_len < 0 or batch < 0:
        raise ValueError(f"seq_len ({seq_len}) and batch ({batch}) must be >= 0")
    if window is not None:
        config = config.replace(sliding_window=window)
    itemsize = torch.empty((), dtype=dtype).element_size()
    if config.is_mla:  # one latent c_KV (d_c) and one shared RoPE key (d_h^R) per token and layer: no K/V pair
        return (config.kv_lora_rank + config.qk_rope_head_dim) * config.n_layers * seq_len * batch * itemsize
    positions = sum(seq_len if w is None else min(seq_len, w)
                    for w in (config.layer_window(i) for i in range(config.n_layers)))
    return 2 * config.n_kv_heads * config.head_dim * positions * batch * itemsize


def six_n(config: ModelConfig) -> int:
    """Training FLOPs per token by the 6N rule (N = non-embedding parameters, the active ones in an MoE):
    2N forward + 4N backward."""
    return 6 * count_params(config).active_non_embedding


def paper_M(config: ModelConfig, seq_len: int) -> int:
    """The paper's model scale M (training FLOPs per token, non-embedding), its Eq. 2:

        M = 72 * n_layers * d_model**2 + 12 * n_layers * d_model * seq_len

    The first term assumes 12 * d_model**2 weights per layer (4 d**2 attention + 8 d**2 FFN); the second is
    attention's score and value products (2 matmuls * 2 FLOPs * 3 for forward+backward, no causal halving).
    """
    L, d = config.n_layers, config.d_model
    return 72 * L * d * d + 12 * L * d * seq_len


def matmul_flops_per_token(config: ModelConfig, seq_len: int, causal: bool = True, training: bool = False) -> float:
    """FLOPs per token actually performed by the matrix products of one forward (x3 with `training`).

    2 FLOPs per weight of every Linear (all layers and the lm_head; the embedding is a lookup, the norms
    are negligible), plus attention's q.k and weights.v products: 2 * 2 * n_heads * head_dim per visible
    key. With `causal`, token i sees i + 1 keys, on average (seq_len + 1) / 2: the causal halving; in a
    sliding-window layer (config.layer_window(i) = W) it sees min(i + 1, W), so past W the cost per token
    stops growing. This is the one formula minids uses for MFU. In an MoE only the active experts count (and
    the router).
    """
    p = count_params(config)
    weights = p.attention + p.active_ffn + p.lm_head
    keys_seen = sum(mean_keys_seen(seq_len, config.layer_window(i) if causal else None, causal)
                    for i in range(config.n_layers))
    attention = 4 * config.n_heads * config.head_dim * keys_seen
    if config.is_mla:  # scores over d_h + d_h^R channels, values over d_v: the decompressed path (prefill)
        attention = 2 * config.n_heads * (config.qk_head_dim + config.v_head_dim) * keys_seen
    forward = 2 * weights + attention
    return 3 * forward if training else forward


def mean_keys_seen(seq_len: int, window: int | None, causal: bool) -> float:
    """Keys a query attends to, averaged over the seq_len positions of one layer."""
    if not causal:
        return float(seq_len)
    if window is None or window >= seq_len:
        return (seq_len + 1) / 2
    # positions 0 .. W-1 see 1 .. W keys; the remaining seq_len - W see W each
    return (window * (window + 1) / 2 + (seq_len - window) * window) / seq_len


def mla_decode_flops_per_token(config: ModelConfig, context: int, absorbed: bool) -> float:
    """FLOPs of one decoding step (one new token per sequence, `context` cached positions), for MLA's two paths.

    Both pay 2 FLOPs per weight of every Linear the token passes through (the active ones), then per layer:
      decompressed  rebuild all `context` cached latents into per-head keys and values (kv_b_proj: 2 d_c h (d_h
                    + d_v) per cached token), then attend: 2 h (d_h + d_h^R) + 2 h d_v per cached token
      absorbed      fold W_UK into the query and W_UV after (already counted once, as kv_b_proj's weights), then
                    attend in latent space: 2 h (d_c + d_h^R) + 2 h d_c per cached token
    For V3 (h 128, d_c 512): 33.6 MFLOP per cached token and layer decompressed, 0.28 MFLOP absorbed.
    """
    if not config.is_mla:
        raise ValueError("mla_decode_flops_per_token needs a multi-head latent attention config (kv_lora_rank set)")
    p = count_params(config)
    h, c, r = config.n_heads, config.kv_lora_rank, config.qk_rope_head_dim
    weights = 2 * (p.attention + p.active_ffn + p.lm_head)
    if absorbed:
        per_key = 2 * h * (c + r) + 2 * h * c
    else:
        per_key = 2 * c * h * (config.qk_nope_head_dim + config.v_head_dim) + 2 * h * (config.qk_head_dim + config.v_head_dim)
    return weights + config.n_layers * context * per_key
