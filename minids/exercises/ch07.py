"""Checkers for chapter 07 (inference): top-k filtering of logits, and the bandwidth floor of a decode step."""

from __future__ import annotations

import torch

from ..accounting import count_params, kv_cache_bytes
from ..config import ModelConfig
from ._contract import checker, expect_close

__all__ = ["check_top_k_filter", "check_decode_floor_ms"]


@checker("top_k_filter")
def check_top_k_filter(fn) -> None:
    """fn(logits (batch, vocab), k) -> the logits with every entry below the row's k-th largest set to -inf."""
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(7))
    for k in (1, 5, 50):
        kth = logits.topk(k, dim=-1).values[:, -1:]
        want = logits.masked_fill(logits < kth, float("-inf"))
        got = fn(logits.clone(), k)
        assert isinstance(got, torch.Tensor) and got.shape == want.shape, (
            f"top_k_filter(logits of shape {tuple(logits.shape)}, k={k}) should keep the shape, got "
            f"{getattr(got, 'shape', type(got))}")
        kept = torch.isfinite(got).sum(-1)
        assert bool((kept == k).all()), (
            f"k={k}: rows keep {kept.tolist()} finite logits, expected {k} each (per row, along the vocabulary axis)")
        expect_close(got, want, f"top_k_filter(logits, k={k})")


@checker("decode_floor_ms")
def check_decode_floor_ms(fn) -> None:
    """fn(config, batch, context, bandwidth) -> ms per decode step at the floor: (bf16 weights + batch x the KV cache
    of `context` positions) / bandwidth."""
    for name, batch, context in (("deepseek-llm-7b", 1, 2048), ("deepseek-llm-7b", 64, 2048),
                                 ("deepseek-llm-67b", 8, 4096)):
        cfg = ModelConfig.preset(name)
        weights = 2 * count_params(cfg).total
        want = (weights + kv_cache_bytes(cfg, context, batch=batch)) / 4.3e12 * 1e3
        got = float(fn(cfg, batch, context, 4.3e12))
        if abs(got - weights / 4.3e12 * 1e3) < 1e-6 * want and batch > 0:
            raise AssertionError(f"{name}, B={batch}, T={context}: {got:.3f} ms counts the weights only; "
                                 f"every sequence's KV cache is read too (expected {want:.3f} ms)")
        single = (weights + kv_cache_bytes(cfg, context)) / 4.3e12 * 1e3
        if batch > 1 and abs(got - single) < 1e-6 * want:
            raise AssertionError(f"{name}, B={batch}, T={context}: {got:.3f} ms reads one cache; the step reads "
                                 f"all {batch} (expected {want:.3f} ms)")
        assert abs(got - want) <= 1e-6 * want, f"{name}, B={batch}, T={context}: got {got:.4f} ms, expected {want:.4f} ms"
