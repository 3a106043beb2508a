"""Checkers for chapter 10 (performance): causal attention FLOPs per token, and the roofline."""

from __future__ import annotations

from ..config import ModelConfig
from ..mfu import attainable_flops
from ._contract import checker

__all__ = ["check_attention_flops", "check_attainable_flops"]


def _attention_flops(cfg: ModelConfig, t: int) -> float:
    # q.k and weights.v: 2 products x 2 FLOPs x n_heads x head_dim per visible key; token i sees i + 1 keys
    return cfg.n_layers * 4 * cfg.n_heads * cfg.head_dim * (t + 1) / 2


@checker("attention_flops")
def check_attention_flops(fn) -> None:
    """fn(cfg, t) -> attention's score FLOPs per token of a causal sequence of t tokens, summed over the layers."""
    for name, t in (("deepseek-llm-7b", 2048), ("deepseek-llm-67b", 4096), ("deepseek-llm-7b", 1)):
        cfg = ModelConfig.preset(name)
        want, got = _attention_flops(cfg, t), float(fn(cfg, t))
        if abs(got - 2 * want * t / (t + 1)) < 1e-6 * want and t > 1:
            raise AssertionError(f"{name}, t={t}: got {got:.4g}, every query sees all t keys; causally token i "
                                 f"sees i + 1, (t + 1) / 2 on average (expected {want:.4g})")
        if abs(got - want * cfg.n_kv_heads / cfg.n_heads) < 1e-6 * want and cfg.n_kv_heads != cfg.n_heads:
            raise AssertionError(f"{name}, t={t}: got {got:.4g}: every QUERY head computes scores "
                                 f"({cfg.n_heads}), not only the {cfg.n_kv_heads} key/value heads")
        assert abs(got - want) <= 1e-9 * want, f"{name}, t={t}: got {got:.6g} FLOPs per token, expected {want:.6g}"


@checker("attainable_flops")
def check_attainable_flops(fn) -> None:
    """fn(intensity, peak, bandwidth) -> the roofline's attainable FLOP/s."""
    for intensity in (1.0, 28.3, 183.7, 184.0, 4000.0):
        want = attainable_flops(intensity, 790e12, 4.3e12)
        got = float(fn(intensity, 790e12, 4.3e12))
        assert abs(got - want) <= 1e-9 * want, (
            f"intensity {intensity} FLOP/byte: got {got:.4g} FLOP/s, expected {want:.4g} "
            f"({'memory' if intensity * 4.3e12 < 790e12 else 'compute'}-bound)")
