"""Sliding windows against the outside reference: transformers' Mistral (and Ministral, for a local/global
pattern) on the same random weights, for sequences longer than the window."""

import pytest
import torch
from transformers import AutoModelForCausalLM, MinistralConfig, MinistralForCausalLM, MistralConfig, MistralForCausalLM

from minids import DeepSeekLM, ModelConfig
from minids.attention import FLEX_AVAILABLE

from conftest import rel_err, tiny_config

S, F = "sliding_attention", "full_attention"
IMPLS = ["sdpa", "einsum"] + (["flex"] if FLEX_AVAILABLE else [])


def reference(cfg: ModelConfig):
    hf = cfg.to_hf_dict()
    kind = {"mistral": (MistralConfig, MistralForCausalLM), "ministral": (MinistralConfig, MinistralForCausalLM)}
    config_cls, model_cls = kind[hf["model_type"]]
    config = config_cls(**{k: v for k, v in hf.items() if k not in ("model_type", "architectures")})
    config._attn_implementation = "eager"  # the reference's plainest path
    model = model_cls(config).eval()
    with torch.no_grad():  # random norms too, so that a swapped norm weight would show
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0, 0.05)
    return model


def _cfg(window=5, layer_types=None, n_heads=8, n_kv_heads=2):
    return tiny_config(n_heads, n_kv_heads, n_layers=3, sliding_window=window, layer_types=layer_types)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("layer_types", [None, (S, F, S)])
def test_logits_match_transformers_past_the_window(layer_types, impl):
    cfg = _cfg(layer_types=layer_types)
    ref = reference(cfg)
    assert type(ref).__name__ == ("MistralForCausalLM" if layer_types is None else "MinistralForCausalLM")
    model = DeepSeekLM.from_hf(ref).eval()
    assert model.config == cfg.replace(init_std=ref.config.initializer_range)
    model.attn_impl = impl
    ids = torch.randint(0, cfg.vocab_size, (2, 29))  # 29 positions, window 5: most queries lose keys
    with torch.no_grad():
        expected, got = ref(ids).logits, model(ids)
    assert rel_err(got, expected) <= 1e-5


@pytest.mark.parametrize("layer_types", [None, (S, F, S)])
def test_cached_decoding_matches_transformers_forward(layer_types):
    cfg = _cfg(window=4, layer_types=layer_types)
    ref = reference(cfg)
    model = DeepSeekLM.from_hf(ref).eval()
    ids = torch.randint(0, cfg.vocab_size, (2, 26))
    with torch.no_grad():
        expected = ref(ids).logits
        cache = model.new_kv_cache(batch=2)  # a RollingKVCache: 4 slots per window layer
        steps = [model(ids[:, :6], cache)] + [model(ids[:, i : i + 1], cache) for i in range(6, 26)]
    assert rel_err(torch.cat(steps, dim=1), expected) <= 1e-5


def test_the_window_matters_in_the_reference_too():
    # The parity above is not parity of two full-attention models: transformers' Llama on the same
    # weights (no window) gives other logits past the window.
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = _cfg()
    ref = reference(cfg)
    llama = LlamaForCausalLM(LlamaConfig(**cfg.replace(sliding_window=None).to_hf_dict())).eval()
    llama.load_state_dict(ref.state_dict())
    ids = torch.randint(0, cfg.vocab_size, (1, 20))
    with torch.no_grad():
        assert rel_err(llama(ids).logits[:, 5:], ref(ids).logits[:, 5:]) > 1e-3


def test_save_hf_writes_a_folder_transformers_loads_as_mistral(tmp_path):
    cfg = _cfg()
    model = DeepSeekLM(cfg.replace(init_std=0.05)).eval()
    model.save_hf(tmp_path)
    ref = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(ref).__name__ == "MistralForCausalLM" and ref.config.sliding_window == 5
    ids = torch.randint(0, cfg.vocab_size, (2, 23))
    with torch.no_grad():
        assert rel_err(model(ids), ref(ids).logits) <= 1e-5
    assert DeepSeekLM.from_hf(tmp_path).config == model.config


def test_config_round_trips():
    cases = ((_cfg(), "mistral"), (_cfg(layer_types=(F, S, S)), "ministral"), (_cfg(window=None), "llama"))
    for cfg, model_type in cases:
        hf = cfg.to_hf_dict()
        assert hf["model_type"] == model_type
        assert ModelConfig.from_hf(hf) == cfg
    # A Mistral config from transformers itself (it writes head_dim and sliding_window; null = no window).
    fields = {k: v for k, v in _cfg().to_hf_dict().items() if k not in ("model_type", "architectures")}
    mistral = MistralConfig(**fields)
    assert ModelConfig.from_hf(mistral.to_dict()).sliding_window == 5
    assert ModelConfig.from_hf(mistral.to_dict() | {"sliding_window": None}).sliding_window is None


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(head_dim=32), "head_dim 32 x num_attention_heads 8 != hidden_size 128"),
        (dict(layer_types=[S, F, S]), "MistralForCausalLM ignores them"),
        (dict(model_type="ministral", layer_types=[S, "chunked_attention", S]), r"\['chunked_attention'\] are not"),
        (dict(model_type="ministral", layer_types=[S, F, S], sliding_window=None), "sliding_window is null"),
        (dict(model_type="llama"), "a .llama. config with sliding_window=5 .* its model class ignores both"),
        (dict(model_type="deepseek"), "a .deepseek. config with sliding_window=5"),
        (dict(model_type="mixtral"), "model_type 'mixtral' is not supported"),
    ],
)
def test_from_hf_refuses_what_it_cannot_honour(change, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_hf(_cfg().to_hf_dict() | change)


def test_mistral_layer_types_that_say_what_mistral_does_are_accepted():
    hf = _cfg().to_hf_dict() | {"layer_types": [S, S, S]}
    assert ModelConfig.from_hf(hf) == _cfg()
