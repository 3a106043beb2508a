"""The rolling-buffer KV cache: slot = position mod W, bounded memory, and the same logits as the full forward."""

import pytest
import torch

from minids import DeepSeekLM, KVCache, RollingKVCache, generate, kv_cache_bytes
from minids.rolling_cache import prefill
from minids.static_cache import StaticDecoder, static_decode_step

from conftest import rel_err, tiny_config

S, F = "sliding_attention", "full_attention"


def _model(window=5, layer_types=None, n_layers=3, dtype=torch.float64, max_seq_len=64):
    cfg = tiny_config(8, 2, n_layers=n_layers, sliding_window=window, layer_types=layer_types, init_std=0.1,
                      max_seq_len=max_seq_len)
    return DeepSeekLM(cfg, dtype=dtype).eval()


def test_windowed_models_get_a_rolling_cache_bounded_by_the_window():
    model = _model(5)
    cache = model.new_kv_cache(batch=2, max_len=60)
    assert isinstance(cache, RollingKVCache) and cache.capacity == [5, 5, 5]
    assert cache.keys[0].shape == (2, 2, 5, model.config.head_dim)  # (b, k, W, d) whatever max_len is
    assert cache.nbytes == model.new_kv_cache(batch=2, max_len=10).nbytes
    mixed = _model(5, layer_types=(S, F, S))
    assert mixed.new_kv_cache(batch=1, max_len=40).capacity == [5, 40, 5]  # the full layer keeps everything
    assert type(_model(None).new_kv_cache(1, 8)) is KVCache  # full attention: the preallocated cache, as before
    with pytest.raises(ValueError, match="use KVCache"):
        RollingKVCache(_model(None).config, batch=1)


def test_position_i_lives_in_slot_i_mod_w():
    model = _model(4, n_layers=1)
    cache = model.new_kv_cache(batch=1)
    ids = torch.randint(0, 97, (1, 11))
    with torch.no_grad():
        model(ids[:, :6], cache)  # a chunk that wraps: positions 2..5 stay
        assert cache.positions[0].tolist() == [4, 5, 2, 3]
        for i in range(6, 11):
            model(ids[:, i : i + 1], cache)
        assert cache.positions[0].tolist() == [8, 9, 10, 7]
        # What slot 10 mod 4 = 2 holds is position 10's key, the one a full forward computes there.
        full = model.new_kv_cache(batch=1)  # fresh cache, then one pass over all 11 positions
        model(ids, full)
    assert rel_err(cache.keys[0], full.keys[0]) <= 1e-12  # same slots, same keys (to round-off)


@pytest.mark.parametrize("layer_types", [None, (S, F, S)])
@pytest.mark.parametrize("chunks", [(1,) * 37, (12, 1, 1, 3, 20), (37,), (3, 9, 1, 24)])
def test_chunked_prefill_and_decoding_past_the_window_equal_the_full_forward(chunks, layer_types):
    # W = 5 and chunks of 1 (decoding), shorter and longer than W, and all of it at once.
    model = _model(5, layer_types=layer_types)
    ids = torch.randint(0, 97, (2, 37))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_kv_cache(batch=2, max_len=37)
        pieces, a = [], 0
        for n in chunks:
            pieces.append(model(ids[:, a : a + n], cache))
            a += n
    assert cache.length == 37
    assert rel_err(torch.cat(pieces, dim=1), full) <= 1e-12


def test_decoding_in_float32_matches_the_full_forward():
    model = _model(6, dtype=torch.float32)
    ids = torch.randint(0, 97, (1, 40))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_kv_cache(batch=1)
        steps = [model(ids[:, :4], cache)] + [model(ids[:, i : i + 1], cache) for i in range(4, 40)]
    assert rel_err(torch.cat(steps, dim=1), full) <= 1e-5


def test_prefill_in_chunks_gives_the_last_logits():
    model = _model(5)
    ids = torch.randint(0, 97, (2, 23))
    with torch.no_grad():
        expected = model(ids)[:, -1:]
        for chunk in (None, 2, 7, 23):
            assert rel_err(prefill(model, ids, model.new_kv_cache(2), chunk), expected) <= 1e-12
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        prefill(model, ids, model.new_kv_cache(2), -1)


def test_generate_with_a_rolling_cache_equals_greedy_full_forwards():
    model = _model(4, dtype=torch.float32)
    prompt = torch.randint(0, 97, (2, 9))
    out = generate(model, prompt, max_new_tokens=15)
    ids = prompt
    with torch.no_grad():
        for _ in range(15):  # no cache: the whole sequence every step
            ids = torch.cat([ids, model(ids)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, ids)


def test_reset_and_overflow():
    model = _model(4, layer_types=(S, F, S))
    cache = model.new_kv_cache(batch=1, max_len=8)
    with torch.no_grad():
        model(torch.zeros(1, 7, dtype=torch.long), cache)
        with pytest.raises(ValueError, match="full-attention layers hold 7 of 8 positions and cannot take 2 more"):
            model(torch.zeros(1, 2, dtype=torch.long), cache)
    cache.reset()
    assert cache.length == 0 and all((p == -1).all() for p in cache.positions)
    # Window layers only: the cache never fills up; only the model's RoPE table (max_seq_len) bounds positions.
    windowed = _model(4, max_seq_len=64)
    small = windowed.new_kv_cache(batch=1, max_len=8)
    with torch.no_grad():
        for _ in range(4):
            windowed(torch.zeros(1, 10, dtype=torch.long), small)
    assert small.length == 40


def test_allocated_bytes_equal_the_accounting():
    for layer_types in (None, (S, F, S)):
        model = _model(5, layer_types=layer_types, dtype=torch.bfloat16)
        cache = model.new_kv_cache(batch=3, max_len=50)
        allocated = sum(t.untyped_storage().nbytes() for t in cache.keys + cache.values)
        assert allocated == cache.nbytes == kv_cache_bytes(model.config, 50, batch=3)


def test_static_decoder_refuses_windowed_models_and_still_serves_full_ones():
    windowed = _model(5, dtype=torch.float32)
    with pytest.raises(ValueError, match="full-attention models only.*decode it with minids.generate"):
        StaticDecoder(windowed, batch=1, max_len=16)
    with pytest.raises(ValueError, match="full-attention models only"):
        static_decode_step(windowed, KVCache(windowed.config, 1, 16), torch.zeros(1, 1, dtype=torch.long),
                           torch.zeros(1, dtype=torch.long))
    full = _model(None, dtype=torch.float32)
    prompt = torch.randint(0, 97, (1, 5))
    assert torch.equal(StaticDecoder(full, batch=1, max_len=16).generate(prompt, 6), generate(full, prompt, 6))


@pytest.mark.parametrize("layer_types", [None, (S, F, S)])
def test_left_padded_rows_with_a_window_get_their_prompt_alone(layer_types):
    # Prompts of different lengths as one batch (generate.pad_prompts): the band is counted in slots, which
    # is the same as in each row's own positions (padding shifts query and key alike); padding keys stay
    # hidden, also once the rolling buffer has wrapped and the keys are out of order.
    from minids.generate import pad_prompts

    model = _model(4, layer_types=layer_types)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 97, (n,), generator=g) for n in (9, 3, 6)]
    ids, pad = pad_prompts(prompts)
    new = torch.randint(0, 97, (3, 8), generator=g)  # 8 more tokens per row: past W for every row
    with torch.no_grad():
        for impl in ("sdpa", "einsum"):
            model.attn_impl = impl
            cache = model.new_kv_cache(batch=3, max_len=9 + 8)
            steps = [model(ids, cache, pad=pad)] + [model(new[:, i : i + 1], cache) for i in range(8)]
            batched = torch.cat(steps, dim=1)
            assert torch.equal(cache.pad, pad)
            tol = 1e-6 if impl == "einsum" else 1e-12  # einsum takes its softmax in float32
            for row, p in enumerate(prompts):
                alone = model(torch.cat([p, new[row]])[None])
                assert rel_err(batched[row, pad[row]:], alone[0]) <= tol, (impl, row)
            no_cache = model(torch.cat([ids, new], dim=1), pad=pad)  # the same, in one pass without a cache
            assert rel_err(no_cache, batched) <= tol
    cache.reset()
    assert cache.pad is None


def test_ragged_generate_with_a_window_equals_one_prompt_at_a_time():
    model = _model(4, dtype=torch.float32)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 97, (n,), generator=g) for n in (7, 2, 5)]
    together = generate(model, prompts, max_new_tokens=9)
    for p, out in zip(prompts, together):
        assert torch.equal(out, generate(model, p[None], max_new_tokens=9)[0])
