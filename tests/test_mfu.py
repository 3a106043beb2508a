"""MFU and the roofline, checked against hand-derived numbers and FACTS section 6."""

import pytest
import torch

from minids import ModelConfig, count_params, kv_cache_bytes, matmul_flops_per_token
from minids.mfu import (
    achieved_flops, attainable_flops, decode_intensity, measure_matmul_peak, mfu, prefill_intensity,
    tokens_per_s_at_mfu, weight_bytes,
)

SEVEN_B = ModelConfig.preset("deepseek-llm-7b")


def test_mfu_by_hand_for_the_7b():
    # 2 FLOPs per matmul weight (all layers + lm_head, not the embedding lookup) + causal attention.
    p = count_params(SEVEN_B)
    t = 4096
    per_token = 2 * (p.total - p.embedding - p.norms) + 30 * 4 * 4096 * (t + 1) / 2
    assert mfu(1000.0, SEVEN_B, t, peak_flops=1e15) == pytest.approx(1000.0 * per_token / 1e15)


def test_transformers_prefill_from_facts_is_65_percent():
    # FACTS section 6: 36.9k tok/s at B=1 T=4096 and 38.3k at B=8 T=2048, both 65% of 790e12.
    assert mfu(36_900, SEVEN_B, 4096, 790e12) == pytest.approx(0.65, abs=0.006)
    assert mfu(38_300, SEVEN_B, 2048, 790e12) == pytest.approx(0.65, abs=0.006)


def test_training_counts_three_forwards_and_inverse_round_trips():
    a = achieved_flops(100.0, SEVEN_B, 2048, training=True)
    assert a == pytest.approx(3 * achieved_flops(100.0, SEVEN_B, 2048))
    tps = tokens_per_s_at_mfu(0.7, SEVEN_B, 4096, 790e12)
    assert mfu(tps, SEVEN_B, 4096, 790e12) == pytest.approx(0.7)


def test_peak_is_required_and_checked():
    with pytest.raises(TypeError):
        mfu(1.0, SEVEN_B, 128)  # no default peak: it depends on the card and the dtype
    with pytest.raises(ValueError, match="peak_flops must be a positive number"):
        mfu(1.0, SEVEN_B, 128, peak_flops=0)
    with pytest.raises(ValueError, match="seq_len"):
        mfu(1.0, SEVEN_B, 0, peak_flops=1e12)


def test_roofline_prefill_is_compute_bound_and_decode_memory_bound():
    peak, bandwidth = 790e12, 4.3e12  # FACTS section 6
    balance = peak / bandwidth  # about 184 FLOPs per byte
    assert prefill_intensity(SEVEN_B, 1, 4096) > 10 * balance
    i_decode = decode_intensity(SEVEN_B, 1, 512)
    assert 0.5 < i_decode < 2  # about one multiply-add per bf16 weight read: 2 FLOPs / 2 bytes
    assert attainable_flops(i_decode, peak, bandwidth) == pytest.approx(i_decode * bandwidth)
    assert attainable_flops(1e4, peak, bandwidth) == peak
    # Batch-1 decode of the 67B reads its 134.85 GB of bf16 weights once per token (FACTS section 6).
    assert weight_bytes(ModelConfig.preset("deepseek-llm-67b")) == 2 * 67_425_001_472


def test_decode_intensity_grows_with_batch_until_the_kv_cache_dominates():
    small, big = decode_intensity(SEVEN_B, 1, 512), decode_intensity(SEVEN_B, 64, 512)
    assert big > 20 * small
    # With a huge batch the weights are shared and only each sequence's cache is read: the intensity tends
    # to one token's FLOPs per byte of one sequence's KV cache.
    limit = matmul_flops_per_token(SEVEN_B, 512, causal=False) / kv_cache_bytes(SEVEN_B, 512, 1)
    assert decode_intensity(SEVEN_B, 10**7, 512) == pytest.approx(limit, rel=0.01)


def test_measure_matmul_peak_on_cpu_is_a_positive_rate():
    peak = measure_matmul_peak("cpu", dtype=torch.float32, n=128, repeats=2)
    assert 1e6 < peak < 1e14
