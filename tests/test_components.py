"""RMSNorm and RoPE on their own, against transformers' Llama pieces and their defining properties."""

import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm, apply_rotary_pos_emb

from minids import RMSNorm, apply_rope, apply_rope_interleaved, interleaved_to_rotate_half, rope_cos_sin, rope_inv_freq

from conftest import rel_err


def test_rmsnorm_matches_llama_and_keeps_dtype():
    x = torch.randn(2, 5, 64) * 3
    ours, ref = RMSNorm(64, eps=1e-6), LlamaRMSNorm(64, eps=1e-6)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ref.weight.copy_(ours.weight)
    assert rel_err(ours(x), ref(x)) <= 1e-6
    y = ours.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16
    unit = RMSNorm(64)(x)
    assert torch.allclose(unit.pow(2).mean(-1), torch.ones(2, 5), atol=1e-4)  # unit RMS per token


def test_rope_matches_llama():
    q, k = torch.randn(2, 4, 10, 32), torch.randn(2, 4, 10, 32)
    cos, sin = rope_cos_sin(torch.arange(10), rope_inv_freq(32))
    ref_q, ref_k = apply_rotary_pos_emb(q, k, cos[None], sin[None])
    assert rel_err(apply_rope(q, cos, sin), ref_q) <= 1e-6
    assert rel_err(apply_rope(k, cos, sin), ref_k) <= 1e-6


def test_rope_score_depends_only_on_distance():
    q, k = torch.randn(64), torch.randn(64)
    inv = rope_inv_freq(64)

    def score(m, n):
        cm, sm = rope_cos_sin(torch.tensor([m]), inv)
        cn, sn = rope_cos_sin(torch.tensor([n]), inv)
        return (apply_rope(q[None], cm, sm) * apply_rope(k[None], cn, sn)).sum().item()

    assert abs(score(7, 3) - score(107, 103)) < 1e-3
    assert abs(score(7, 3) - score(3, 7)) > 1e-3  # but it does depend on the sign of the distance


def test_rope_preserves_norm():
    x = torch.randn(3, 50, 16)
    cos, sin = rope_cos_sin(torch.arange(50), rope_inv_freq(16))
    assert torch.allclose(apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1), atol=1e-5)


def test_interleaved_and_rotate_half_differ_by_a_permutation():
    x = torch.randn(5, 32)
    cos, sin = rope_cos_sin(torch.arange(5), rope_inv_freq(32))
    perm = interleaved_to_rotate_half(32)
    assert torch.allclose(apply_rope(x[..., perm], cos, sin), apply_rope_interleaved(x, cos, sin)[..., perm], atol=1e-6)
    assert not torch.allclose(apply_rope(x, cos, sin), apply_rope_interleaved(x, cos, sin), atol=1e-3)
