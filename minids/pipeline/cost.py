"""What each piece of the model costs a pipeline stage: parameters, forward FLOPs, activation memory.

A pipeline cuts the model into stages that run one after another, each on its own device. The slowest
stage sets the pace of all of them, so a partition is only as good as its heaviest stage. To balance
stages we need the cost of every piece in the same units:

    embed_tokens            a lookup: no FLOPs, but vocab_size * d_model parameters (first stage)
    layers.0 .. layers.L-1  decoder layers (alike, except an MoE's first dense layers and sliding windows)
    norm + lm_head (+ loss) 2 * d_model * vocab_size FLOPs per token (last stage)

For DeepSeek LLM 67B the lm_head does 1.68 GFLOP per token against 1.38 GFLOP (+ attention) for a decoder
layer: the last stage carries about 1.2 layers more than its decoder layers. The 7B's head (d_model 4096,
the same 102400 vocabulary) is about 2 of its layers. `in_layer_units` expresses any cost that way.

All counts are exact integers for one sequence of `seq_len` tokens:
- flops: the matrix products of one forward pass, the same terms as `accounting.matmul_flops_per_token`
  (2 FLOPs per weight per token; causal attention q.k and weights.v over the visible keys). The backward
  pass costs about twice the forward, for every piece alike, so forward FLOPs rank stages for training too.
- params: weights held by the piece.
- activation_bytes: what a training step keeps alive for the backward pass, in bf16 (2 bytes), assuming
  a fused (flash) attention kernel and no recomputation. It is an estimate from the tensors each
  operation saves, listed in `layer_cost`; exact numbers depend on the kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..accounting import attention_params_per_layer, ffn_params_per_layer, mean_keys_seen, moe_params_per_layer
from ..config import ModelConfig

COST_KINDS = ("flops", "params", "activation_bytes")
BF16_BYTES = 2


@dataclass(frozen=True)
class Cost:
    params: int  # weights held
    flops: int  # forward matmul FLOPs for one sequence of seq_len tokens
    activation_bytes: int  # saved for backward, one sequence, bf16

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.params + other.params, self.flops + other.flops,
                    self.activation_bytes + other.activation_bytes)

    def get(self, by: str) -> int:
        if by not in COST_KINDS:
            raise ValueError(f"cost kind {by!r} is not one of {COST_KINDS}")
        return getattr(self, by)


ZERO = Cost(0, 0, 0)


def _check_seq_len(config: ModelConfig, seq_len: int | None) -> int:
    seq_len = config.max_seq_len if seq_len is None else seq_len
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len must be a positive int, got {seq_len!r}")
    return seq_len


def layer_cost(config: ModelConfig, seq_len: int | None = None, layer_idx: int | None = None) -> Cost:
    """Decoder layer `layer_idx` (default: the last, the model's typical layer) for one sequence of seq_len
    tokens (default max_seq_len). Dense layers are all alike; in an MoE the layers past first_dense_layers
    hold every expert (params) but a token runs only the router, the shared and k routed experts (flops), so
    a pipeline balanced by params and one balanced by flops cut an MoE differently. A sliding-window layer
    sees at most W keys."""
    T = _check_seq_len(config, seq_len)
    i = config.n_layers - 1 if layer_idx is None else layer_idx
    if not 0 <= i < config.n_layers:
        raise ValueError(f"layer_idx {layer_idx} is outside the model's layers 0..{config.n_layers - 1}")
    d, h, hd = config.d_model, config.n_heads, config.head_dim
    kv = config.n_kv_heads * hd
    attention = attention_params_per_layer(config)
    if config.is_moe_layer(i):
        held, active = moe_params_per_layer(config)
        k, f = config.n_experts_per_token, config.moe_d_ff
        # SwiGLU intermediates of the shared experts and of the k routed experts per token, each token's copy
        # going into and coming out of its k experts, and the router's float32 probabilities
        ffn_saved, extra_bytes = 4 * f * (config.n_shared_experts + k) + 2 * k * d, 4 * config.n_routed_experts
    else:
        held = active = ffn_params_per_layer(config)
        ffn_saved, extra_bytes = 4 * config.d_ff, 0  # gate and up projections, SiLU(gate) and their product
    # Causal attention: query i sees min(i + 1, W) keys; q.k and weights.v are 2 FLOPs each per (head, channel,
    # key). Written as T x the mean keys seen, which accounting.matmul_flops_per_token uses too.
    attention_flops = round(4 * h * hd * T * mean_keys_seen(T, config.layer_window(i), True))
    # Tensors saved for backward, per token (elements): the layer input x and its RMSNorm output (d + d),
    # q, k, v after RoPE (d + 2 kv), the attention output (d), h and its RMSNorm output (d + d), the FFN's;
    # plus attention's float32 log-sum-exp.
    saved = 6 * d + 2 * kv + ffn_saved
    return Cost(
        params=attention + held + 2 * d,  # + two RMSNorm gains
        flops=2 * (attention + active) * T + attention_flops,
        activation_bytes=T * (saved * BF16_BYTES + 4 * h + extra_bytes),
    )


def embedding_cost(config: ModelConfig, seq_len: int | None = None) -> Cost:
    """embed_tokens: a table lookup (no FLOPs); it keeps only the int64 token ids for backward."""
    T = _check_seq_len(config, seq_len)
    return Cost(params=config.vocab_size * config.d_model, flops=0, activation_bytes=8 * T)


def head_cost(config: ModelConfig, seq_len: int | None = None, loss: bool = True) -> Cost:
    """The final RMSNorm, the lm_head and (with `loss`) the cross-entropy, which sit on the last stage."""
    T = _check_seq_len(config, seq_len)
    d, V = config.d_model, config.vocab_size
    # Saved: the norm's input and output (2 d), the bf16 logits (V); the loss works in float32 and keeps
    # its log-probabilities (4 bytes * V) for the backward pass.
    saved = 2 * d * BF16_BYTES + V * BF16_BYTES + (4 * V if loss else 0)
    return Cost(params=d + d * V, flops=2 * d * V * T, activation_bytes=T * saved)


def module_costs(config: ModelConfig, seq_len: int | None = None, loss: bool = True) -> tuple[Cost, list[Cost], Cost]:
    """(embedding, [each decoder layer], head): everything a partition has to place."""
    layers = [layer_cost(config, seq_len, i) for i in range(config.n_layers)]
    return embedding_cost(config, seq_len), layers, head_cost(config, seq_len, loss)


def in_layer_units(config: ModelConfig, cost: Cost, by: str = "flops", seq_len: int | None = None) -> float:
    """`cost` measured in decoder layers: head_cost(67B) in FLOPs is about 1.2 layers."""
    return cost.get(by) / layer_cost(config, seq_len).get(by)
