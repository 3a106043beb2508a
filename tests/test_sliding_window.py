"""Sliding-window attention: the config fields, the band mask, and every attention path computing one function."""

import pytest
import torch

from minids import DeepSeekLM, ModelConfig
from minids.attention import FLEX_AVAILABLE, band_mask, causal_mask, sliding_window_mask

from conftest import rel_err, tiny_config

S, F = "sliding_attention", "full_attention"


# ---- the config ------------------------------------------------------------------------------------
def test_layer_window_follows_the_pattern():
    plain = tiny_config(n_layers=3)
    assert [plain.layer_window(i) for i in range(3)] == [None] * 3 and not plain.windowed
    every = plain.replace(sliding_window=5)
    assert [every.layer_window(i) for i in range(3)] == [5, 5, 5] and every.windowed
    mixed = plain.replace(sliding_window=5, layer_types=[S, F, S])  # a list is accepted and stored as a tuple
    assert mixed.layer_types == (S, F, S)
    assert [mixed.layer_window(i) for i in range(3)] == [5, None, 5]
    # Every layer sliding is what sliding_window alone says: one spelling, equal configs.
    assert plain.replace(sliding_window=5, layer_types=(S, S, S)) == every
    assert ModelConfig(**mixed.to_dict()) == mixed  # survives a dict (JSON) round trip
    with pytest.raises(IndexError, match=r"layer must be an int in \[0, 3\), got 3"):
        mixed.layer_window(3)


def test_repr_shows_the_window_only_when_there_is_one():
    plain = ModelConfig.preset("deepseek-llm-67b")
    assert repr(plain).endswith("norm_eps=1e-06, init_std=0.006)")  # the paper's fields, as before
    assert "sliding_window" not in repr(plain)
    mixed = tiny_config(n_layers=2, sliding_window=4, layer_types=(S, F))
    assert repr(mixed).endswith("sliding_window=4, layer_types=('sliding_attention', 'full_attention'))")
    assert eval(repr(mixed), {"ModelConfig": ModelConfig}) == mixed


@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(sliding_window=0), ValueError, "sliding_window must be None .* or an int >= 1"),
        (dict(sliding_window=2.5), ValueError, "sliding_window must be None"),
        (dict(sliding_window=True), ValueError, "sliding_window must be None"),
        (dict(sliding_window=4, layer_types=(S, F)), ValueError, "2 entries but n_layers is 3"),
        (dict(sliding_window=4, layer_types=(S, F, "local")), ValueError, r"\['local'\] not allowed"),
        (dict(layer_types=(S, F, F)), ValueError, "sliding_attention layers but sliding_window is None"),
        (dict(sliding_window=4, layer_types=(F, F, F)), ValueError, "no sliding_attention layer"),
        (dict(sliding_window=4, layer_types="sliding_attention"), TypeError, "sequence of"),
    ],
)
def test_bad_window_settings_say_what_is_allowed(change, error, message):
    with pytest.raises(error, match=message):
        tiny_config(n_layers=3, **change)


# ---- the mask --------------------------------------------------------------------------------------
def test_band_mask_counts_the_query_itself():
    # transformers' convention: a query sees W keys, itself included (kv > q - W).
    mask = sliding_window_mask(6, 0, 3)
    assert mask.sum(dim=1).tolist() == [1, 2, 3, 3, 3, 3]
    q, kv = torch.meshgrid(torch.arange(6), torch.arange(6), indexing="ij")
    assert torch.equal(mask, (kv <= q) & (kv > q - 3))
    assert torch.equal(sliding_window_mask(5, 0, 1), torch.eye(5, dtype=torch.bool))  # W = 1: itself only
    # After a cached prefix, and with a window as long as everything: the causal mask.
    assert torch.equal(sliding_window_mask(4, 7, 11), causal_mask(4, 7))
    assert torch.equal(sliding_window_mask(4, 7, None), causal_mask(4, 7))
    assert sliding_window_mask(4, 7, 3)[0].nonzero().flatten().tolist() == [5, 6, 7]


def test_band_mask_reads_key_positions_in_any_order_and_skips_empty_slots():
    keys = torch.tensor([8, 9, -1, 6, 7])  # a rolling buffer's slots: out of order, one empty
    mask = band_mask(torch.tensor([9]), keys, 3)
    assert mask.tolist() == [[True, True, False, False, True]]  # positions 7, 8, 9


# ---- the attention paths agree ---------------------------------------------------------------------
def _model(window, n_layers=3, layer_types=None, **kw):
    cfg = tiny_config(8, 2, n_layers=n_layers, sliding_window=window, layer_types=layer_types, init_std=0.1, **kw)
    return DeepSeekLM(cfg, dtype=torch.float64).eval()


IMPLS = ["sdpa", "einsum"] + (["flex"] if FLEX_AVAILABLE else [])


@pytest.mark.parametrize("layer_types", [None, (S, F, S)])
def test_every_impl_computes_the_same_windowed_function(layer_types):
    model = _model(5, layer_types=layer_types)
    ids = torch.randint(0, 97, (2, 41))
    outs = {}
    with torch.no_grad():
        for impl in IMPLS:
            model.attn_impl = impl
            outs[impl] = model(ids)
    for impl in IMPLS[1:]:
        # einsum takes its softmax in float32 (as the reference does), so it agrees to float32 round-off.
        assert rel_err(outs[impl], outs["sdpa"]) <= (1e-6 if impl == "einsum" else 1e-12), impl


def test_the_window_changes_the_function_and_a_long_window_does_not():
    ids = torch.randint(0, 97, (2, 30))
    torch.manual_seed(1)
    full = _model(None)
    with torch.no_grad():
        reference = full(ids)
        for window in (30, 64):  # W >= T: every key is inside the window
            windowed = _model(window)
            windowed.load_state_dict(full.state_dict())
            for impl in IMPLS:
                windowed.attn_impl = impl
                assert rel_err(windowed(ids), reference) <= 1e-6, (window, impl)
        narrow = _model(4)
        narrow.load_state_dict(full.state_dict())
        out = narrow(ids)
    # Positions 0..3 see their whole prefix either way; later ones lose keys.
    assert rel_err(out[:, :4], reference[:, :4]) <= 1e-12
    assert rel_err(out[:, 4:], reference[:, 4:]) > 1e-3


def test_attention_weights_show_the_band():
    model = _model(4, layer_types=(S, F, S))
    ids = torch.randint(0, 97, (1, 12))
    maps = model.attention_weights(ids)
    band, causal = sliding_window_mask(12, 0, 4), causal_mask(12, 0)
    for layer, allowed in zip(maps, (band, causal, band)):
        assert layer.shape == (1, 8, 12, 12)
        assert torch.all(layer[..., ~allowed] == 0)  # nothing outside the band
        assert torch.all(layer[..., allowed] > 0)  # and every key inside it gets some weight
        assert torch.allclose(layer.sum(-1), torch.ones((), dtype=layer.dtype))


@pytest.mark.parametrize("impl", IMPLS)
def test_one_token_decode_path_honours_the_window(impl):
    # The full (non-rolling) cache with a window: the mask hides what is cached but outside the band.
    model = _model(6, layer_types=(S, F, S))
    model.attn_impl = impl
    ids = torch.randint(0, 97, (2, 20))
    from minids import KVCache

    with torch.no_grad():
        full = model(ids)
        cache = KVCache(model.config, batch=2, max_len=20, dtype=torch.float64)
        steps = [model(ids[:, :3], cache)] + [model(ids[:, i : i + 1], cache) for i in range(3, 20)]
    assert rel_err(torch.cat(steps, dim=1), full) <= (1e-6 if impl == "einsum" else 1e-12)


def test_flex_falls_back_without_flexattention(monkeypatch):
    import minids.attention as attention

    monkeypatch.setattr(attention, "FLEX_AVAILABLE", False)
    attention._warn_no_flex.cache_clear()
    model = _model(5)
    ids = torch.randint(0, 97, (1, 17))
    with torch.no_grad():
        expected = model(ids)
        with pytest.warns(UserWarning, match="runs SDPA with a boolean mask"):
            model.attn_impl = "flex"
        assert rel_err(model(ids), expected) <= 1e-12
    attention._warn_no_flex.cache_clear()


def test_flex_impl_trains_and_gives_the_sdpa_gradients():
    # On a CPU FlexAttention has no backward; the "flex" impl then goes through SDPA. On CUDA it is the kernel.
    model = _model(5)
    ids = torch.randint(0, 97, (2, 19))
    grads = {}
    for impl in ("sdpa", "flex"):
        model.attn_impl = impl
        model.zero_grad(set_to_none=True)
        model(ids).square().mean().backward()
        grads[impl] = model.layers[0].self_attn.q_proj.weight.grad.clone()
    assert rel_err(grads["flex"], grads["sdpa"]) <= 1e-12


@pytest.mark.skipif(not FLEX_AVAILABLE, reason="needs FlexAttention (torch >= 2.5)")
def test_block_mask_made_under_inference_mode_can_serve_training():
    from minids.attention import flex_block_mask

    flex_block_mask.cache_clear()
    with torch.inference_mode():
        mask = flex_block_mask(48, 5, "cpu")  # first asked for while generating ...
    assert not mask.kv_indices.is_inference() and not mask.kv_num_blocks.is_inference()  # ... usable in training
