import pytest
import torch

from minids import DeepSeekLM

from conftest import LAYOUTS, rel_err, tiny_config


@pytest.mark.parametrize("impl", ["sdpa", "einsum"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_prefix_then_one_token_at_a_time_equals_full_forward(layout, impl):
    model = DeepSeekLM(tiny_config(*LAYOUTS[layout], init_std=0.05)).eval()
    model.attn_impl = impl
    ids = torch.randint(0, model.config.vocab_size, (2, 25))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_kv_cache(batch=2, max_len=32)
        pieces = [model(ids[:, :10], cache)]
        pieces += [model(ids[:, i : i + 1], cache) for i in range(10, 25)]
    assert cache.length == 25
    assert rel_err(torch.cat(pieces, dim=1), full) <= 1e-5


def test_chunks_after_a_prefix_equal_full_forward():
    model = DeepSeekLM(tiny_config(8, 2, init_std=0.05)).eval()
    ids = torch.randint(0, 97, (1, 30))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_kv_cache(batch=1)
        pieces = [model(ids[:, a:b], cache) for a, b in ((0, 7), (7, 19), (19, 30))]
    assert rel_err(torch.cat(pieces, dim=1), full) <= 1e-5


def test_cache_stores_kv_heads_only():
    model = DeepSeekLM(tiny_config(8, 1))
    cache = model.new_kv_cache(batch=2, max_len=16)
    assert cache.keys[0].shape == (2, 1, 16, model.config.head_dim)
    assert len(cache.keys) == model.config.n_layers


def test_overflow_and_batch_mismatch_raise():
    model = DeepSeekLM(tiny_config()).eval()
    cache = model.new_kv_cache(batch=1, max_len=8)
    with torch.no_grad():
        model(torch.zeros(1, 6, dtype=torch.long), cache)
        with pytest.raises(ValueError, match="KV cache overflow: it holds 6 of 8 positions and cannot take 3 more"):
            model(torch.zeros(1, 3, dtype=torch.long), cache)
        with pytest.raises(ValueError, match="batch 1, ids have batch 2"):
            model(torch.zeros(2, 1, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="exceeds the model's max_seq_len"):
        model.new_kv_cache(batch=1, max_len=model.config.max_seq_len + 1)
