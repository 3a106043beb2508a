"""Chapter 14's exercises: multi-head latent attention.

    check_absorbed_scores(fn)     fn(q_c, w_uk, c_kv) -> (b, h, t, s): the no-position scores q_C . k_C computed
                                  against the cached latents, without forming any key
    check_latent_cache_bytes(fn)  fn(config, seq_len, batch=1, bytes_per_number=2) -> bytes of an MLA cache
"""

from __future__ import annotations

import torch
from einops import einsum

from ..accounting import kv_cache_bytes
from ..config import ModelConfig
from ._contract import checker, expect_close, expect_equal, expect_shape


@checker("absorbed_scores", success="correct: W_UK folded into the query gives the decompressed scores")
def check_absorbed_scores(fn) -> None:
    g = torch.Generator().manual_seed(14)
    b, h, t, s, n, c = 2, 3, 4, 5, 6, 8  # every axis a different size, so a wrong contraction shows
    q_c = torch.randn(b, h, t, n, generator=g, dtype=torch.float64)
    w_uk = torch.randn(h, n, c, generator=g, dtype=torch.float64)  # W_UK per head: k_C = W_UK c_KV
    c_kv = torch.randn(b, s, c, generator=g, dtype=torch.float64)
    k_c = einsum(w_uk, c_kv, "h n c, b s c -> b h s n")  # the decompressed keys, which fn must not need
    want = einsum(q_c, k_c, "b h t n, b h s n -> b h t s")
    got = fn(q_c, w_uk, c_kv)
    expect_shape(got, want.shape, "the scores (b, h, t, s)")
    expect_close(got, want, "the scores", rtol=1e-9, atol=1e-9)


@checker("latent_cache_bytes", success="correct: d_c + d_h^R numbers per token and layer, nothing per head")
def check_latent_cache_bytes(fn) -> None:
    tiny = ModelConfig(vocab_size=97, d_model=32, n_layers=3, n_heads=4, n_kv_heads=4, d_ff=48,
                       kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=12)
    cases = [(ModelConfig.preset("deepseek-v3"), 1, 1, 2), (ModelConfig.preset("deepseek-v2-lite"), 4096, 1, 2),
             (tiny, 10, 3, 4)]
    for config, seq_len, batch, nbytes in cases:
        dtype = {2: torch.bfloat16, 4: torch.float32}[nbytes]
        want = kv_cache_bytes(config, seq_len, batch=batch, dtype=dtype)
        expect_equal(fn(config, seq_len, batch=batch, bytes_per_number=nbytes), want,
                     f"the cache of {config.n_layers} layers, d_c {config.kv_lora_rank}, d_h^R "
                     f"{config.qk_rope_head_dim}, {seq_len} tokens, batch {batch}, {nbytes} bytes a number")
