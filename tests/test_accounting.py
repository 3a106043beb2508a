import pytest
import torch

from minids import DeepSeekLM, ModelConfig, count_params, kv_cache_bytes, paper_M, swiglu_hidden_size

# ../shared/FACTS.md section 2: transformers' LlamaForCausalLM counted on the meta device.
EXACT = {
    "deepseek-llm-7b": (6_910_365_696, 6_071_504_896, (67_108_864, 135_266_304, 8_192)),
    "deepseek-llm-67b": (67_425_001_472, 65_747_279_872, (150_994_944, 541_065_216, 16_384)),
    "llama-2-70b": (68_976_648_192, 68_452_360_192, (150_994_944, 704_643_072, 16_384)),
}


@pytest.mark.parametrize("name", ModelConfig.preset_names())
def test_count_params_equals_the_module_count(name):
    cfg = ModelConfig.preset(name)
    model = DeepSeekLM(cfg, device="meta")
    assert all(p.is_meta for p in model.parameters())  # nothing was allocated
    counted = count_params(cfg)
    assert counted.total == model.num_parameters()
    assert counted.embedding == model.embed_tokens.weight.numel()
    assert counted.lm_head == model.lm_head.weight.numel()
    assert counted.attention == sum(p.numel() for l in model.layers for p in l.self_attn.parameters())
    assert counted.ffn == sum(p.numel() for l in model.layers for p in l.mlp.parameters())
    assert counted.per_layer == sum(p.numel() for p in model.layers[0].parameters())


@pytest.mark.parametrize("name", list(EXACT))
def test_exact_counts_from_facts(name):
    total, non_embedding, (attn, ffn, norms) = EXACT[name]
    cfg = ModelConfig.preset(name)
    assert DeepSeekLM(cfg, device="meta").num_parameters() == total
    counted = count_params(cfg)
    assert (counted.total, counted.non_embedding) == (total, non_embedding)
    assert counted.per_layer == attn + ffn + norms
    assert counted.attention == cfg.n_layers * attn and counted.ffn == cfg.n_layers * ffn


def test_ffn_share_of_a_layer():
    for name, share in (("deepseek-llm-67b", 0.78), ("llama-2-70b", 0.82)):
        p = count_params(ModelConfig.preset(name))
        assert round(p.ffn / (p.attention + p.ffn), 2) == share


def test_swiglu_rule():
    assert swiglu_hidden_size(4096) == 11008 and swiglu_hidden_size(8192) == 22016


def test_kv_cache_bytes_per_token():
    kib = lambda name, **kw: kv_cache_bytes(ModelConfig.preset(name), seq_len=1, **kw) / 1024  # noqa: E731
    assert kib("deepseek-llm-7b") == 480
    assert kib("deepseek-llm-67b") == 380
    mha67 = ModelConfig.preset("deepseek-llm-67b").replace(n_kv_heads=64)
    assert kv_cache_bytes(mha67, 1) / 1024 == 3040
    assert kv_cache_bytes(ModelConfig.preset("deepseek-llm-7b"), 4096) / 2**30 == 1.875
    assert kv_cache_bytes(ModelConfig.preset("deepseek-llm-67b"), 4096, batch=2, dtype=torch.float32) == 4 * 380 * 1024 * 4096


def test_kv_cache_bytes_matches_an_allocated_cache():
    model = DeepSeekLM(ModelConfig.preset("tiny"))
    cache = model.new_kv_cache(batch=3, max_len=50)
    assert cache.nbytes == kv_cache_bytes(model.config, 50, batch=3, dtype=torch.float32)


def test_paper_M_matches_facts():
    # FACTS section 3: 7B M = 42.28e9, 67B M = 4.97e11 (l_seq 4096).
    assert round(paper_M(ModelConfig.preset("deepseek-llm-7b"), 4096) / 1e9, 2) == 42.28
    assert round(paper_M(ModelConfig.preset("deepseek-llm-67b"), 4096) / 1e11, 2) == 4.97


def test_matmul_flops_count_only_the_keys_a_window_lets_through():
    from minids.accounting import matmul_flops_per_token
    from minids.attention import sliding_window_mask

    base = ModelConfig.preset("tiny")
    for window, seq_len in ((4, 16), (16, 16), (5, 37)):
        cfg = base.replace(sliding_window=window)
        keys = int(sliding_window_mask(seq_len, 0, window).sum())  # every (query, visible key) pair, counted
        expected_attention = cfg.n_layers * 4 * cfg.n_heads * cfg.head_dim * keys / seq_len
        no_attention = matmul_flops_per_token(cfg, seq_len) - expected_attention
        full = matmul_flops_per_token(base, seq_len)
        full_attention = base.n_layers * 4 * base.n_heads * base.head_dim * (seq_len + 1) / 2
        assert abs(no_attention - (full - full_attention)) < 1e-6  # the weights' share is unchanged
    assert matmul_flops_per_token(base.replace(sliding_window=64), 32) == matmul_flops_per_token(base, 32)
