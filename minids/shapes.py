"""Parameter-matched shapes: the same non-embedding budget spent on depth, on FFN width, or on d_model.

DeepSeek LLM 67B kept d_model = 8192 and the 8:1 GQA of its peers, and spent its budget on 95 layers with
d_ff = 22016 instead of ~80 layers with d_ff = 28672 (Llama-2-70B): at fixed d_model, depth is bought with
FFN width. This module builds such families for any budget:

    along d_ff:     fixed d_model; n_layers = 1, 2, 4, ...; d_ff solved so that the budget is met
    along d_model:  d_model varied (head_dim fixed, so n_heads follows); n_layers chosen so that d_ff stays
                    near the usual 8/3 * d_model, then d_ff solved to meet the budget

Every layer holds attention (2 d^2 + 2 d * n_kv_heads * head_dim), SwiGLU (3 d * d_ff) and two RMSNorm
gains (2 d); the budget is the non-embedding count of accounting.count_params (layers plus the final norm).
d_ff is rounded to a multiple of `multiple_of`, so a shape misses the budget by less than
L * 3 d * multiple_of / 2, and `shape_for` refuses any shape that misses by more than `tolerance`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .accounting import attention_params_per_layer, count_params
from .config import ModelConfig


@dataclass(frozen=True)
class Shape:
    name: str  # e.g. "L8 d256 ff688"
    axis: str  # "d_ff" (DeepSeek's trade at fixed d_model) or "d_model"
    config: ModelConfig
    budget: int

    @property
    def non_embedding(self) -> int:
        return count_params(self.config).non_embedding

    @property
    def budget_error(self) -> float:
        """(non_embedding - budget) / budget."""
        return self.non_embedding / self.budget - 1

    @property
    def aspect_ratio(self) -> float:
        """d_model / n_layers, Kaplan et al.'s measure of shape."""
        return self.config.d_model / self.config.n_layers


def heads_for(d_model: int, head_dim: int, kv_ratio: int) -> tuple[int, int]:
    """(n_heads, n_kv_heads) for a fixed head_dim and kv_ratio query heads per KV head."""
    if d_model % head_dim:
        raise ValueError(f"d_model ({d_model}) must be a multiple of head_dim ({head_dim})")
    n_heads = d_model // head_dim
    if n_heads % kv_ratio:
        raise ValueError(f"n_heads = d_model / head_dim = {n_heads} must be a multiple of kv_ratio ({kv_ratio})")
    return n_heads, n_heads // kv_ratio


def solve_d_ff(budget: int, d_model: int, n_layers: int, n_heads: int, n_kv_heads: int, multiple_of: int = 8) -> int:
    """The d_ff (a multiple of `multiple_of`) whose non-embedding count comes nearest to `budget`."""
    probe = ModelConfig(vocab_size=2, d_model=d_model, n_layers=1, n_heads=n_heads, n_kv_heads=n_kv_heads, d_ff=1)
    attention = attention_params_per_layer(probe)
    per_layer = (budget - d_model) / n_layers  # the final norm's d_model gains sit outside the layers
    ffn = per_layer - attention - 2 * d_model
    d_ff = round(ffn / (3 * d_model) / multiple_of) * multiple_of
    if d_ff < multiple_of:
        raise ValueError(
            f"{n_layers} layers of d_model {d_model} do not fit a budget of {budget:,}: attention alone takes "
            f"{attention * n_layers:,}, leaving d_ff {ffn / (3 * d_model):.1f} (< {multiple_of}); use fewer layers"
        )
    return d_ff


def shape_for(
    budget: int,
    d_model: int,
    n_layers: int,
    *,
    head_dim: int,
    kv_ratio: int = 1,
    vocab_size: int = 256,
    max_seq_len: int = 512,
    multiple_of: int = 8,
    tolerance: float = 0.03,
    axis: str = "d_ff",
) -> Shape:
    """One shape of n_layers x d_model whose d_ff meets the non-embedding budget within `tolerance`."""
    if budget <= 0 or n_layers <= 0:
        raise ValueError(f"budget ({budget}) and n_layers ({n_layers}) must be positive")
    n_heads, n_kv_heads = heads_for(d_model, head_dim, kv_ratio)
    d_ff = solve_d_ff(budget, d_model, n_layers, n_heads, n_kv_heads, multiple_of)
    config = ModelConfig(
        vocab_size=vocab_size, d_model=d_model, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads,
        d_ff=d_ff, max_seq_len=max_seq_len,
    )
    shape = Shape(f"L{n_layers} d{d_model} ff{d_ff}", axis, config, budget)
    if abs(shape.budget_error) > tolerance:
        raise ValueError(
            f"{shape.name} has {shape.non_embedding:,} non-embedding parameters, {shape.budget_error:+.1%} off the "
            f"budget {budget:,} (tolerance {tolerance:.0%}); d_ff is too coarse here: lower multiple_of"
        )
    return shape


def layers_for_width(budget: int, d_model: int, head_dim: int, kv_ratio: int = 1, ffn_ratio: float = 8 / 3) -> int:
    """How many layers of d_model with d_ff = ffn_ratio * d_model fill the budget (at least 1)."""
    n_heads, n_kv_heads = heads_for(d_model, head_dim, kv_ratio)
    probe = ModelConfig(vocab_size=2, d_model=d_model, n_layers=1, n_heads=n_heads, n_kv_heads=n_kv_heads, d_ff=1)
    per_layer = attention_params_per_layer(probe) + 3 * d_model * ffn_ratio * d_model + 2 * d_model
    return max(1, round((budget - d_model) / per_layer))


def budget_of(d_model: int, n_layers: int, d_ff: int, head_dim: int, kv_ratio: int = 1) -> int:
    """The non-embedding count of a reference shape: the budget its family is matched to."""
    n_heads, n_kv_heads = heads_for(d_model, head_dim, kv_ratio)
    cfg = ModelConfig(vocab_size=2, d_model=d_model, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads,
                      d_ff=d_ff)
    return count_params(cfg).non_embedding


def param_matched_family(
    budget: int,
    d_model: int,
    layers: tuple[int, ...] | None = None,
    widths: tuple[int, ...] = (),
    *,
    head_dim: int,
    kv_ratio: int = 1,
    vocab_size: int = 256,
    max_seq_len: int = 512,
    multiple_of: int = 8,
    tolerance: float = 0.03,
) -> list[Shape]:
    """Shapes with one non-embedding budget, from shallow-and-wide to deep-and-narrow.

    layers: the depths to try at fixed d_model (d_ff axis). None means 1, 2, 4, ... while d_ff >= multiple_of.
    widths: other d_models (d_model axis); each gets the depth that keeps d_ff near 8/3 d_model.
    Every shape is within `tolerance` of the budget (checked). Sorted by n_layers, then by d_model.
    """
    common = dict(head_dim=head_dim, kv_ratio=kv_ratio, vocab_size=vocab_size, max_seq_len=max_seq_len,
                  multiple_of=multiple_of, tolerance=tolerance)
    shapes = []
    if layers is None:
        n = 1
        while True:
            try:
                shapes.append(shape_for(budget, d_model, n, **common))
            except ValueError:
                if not shapes:
                    raise
                break
            n *= 2
    else:
        shapes += [shape_for(budget, d_model, n, **common) for n in layers]
    for width in widths:
        n = layers_for_width(budget, width, head_dim, kv_ratio)
        shapes.append(shape_for(budget, width, n, axis="d_model", **common))
    return sorted(shapes, key=lambda s: (s.config.n_layers, s.config.d_model))
