import json

import pytest

from minids import ModelConfig

# ../shared/FACTS.md section 1 (paper Table 2 and the published config.json files).
TABLE_2 = {
    "deepseek-llm-7b": dict(n_layers=30, d_model=4096, n_heads=32, n_kv_heads=32, d_ff=11008, vocab_size=102400),
    "deepseek-llm-67b": dict(n_layers=95, d_model=8192, n_heads=64, n_kv_heads=8, d_ff=22016, vocab_size=102400),
}


@pytest.mark.parametrize("name", list(TABLE_2))
def test_presets_match_table_2(name):
    cfg = ModelConfig.preset(name)
    for field, value in TABLE_2[name].items():
        assert getattr(cfg, field) == value, field
    assert cfg.head_dim == 128 and cfg.max_seq_len == 4096
    assert cfg.rope_theta == 10000.0 and cfg.norm_eps == 1e-6 and cfg.init_std == 0.006


def test_mini_keeps_the_67b_shape():
    mini, big = ModelConfig.preset("deepseek-llm-67b-mini"), ModelConfig.preset("deepseek-llm-67b")
    assert mini.n_layers == big.n_layers == 95
    assert mini.n_rep == big.n_rep == 8
    assert mini.d_ff / mini.d_model == big.d_ff / big.d_model


def test_attention_kind():
    assert ModelConfig.preset("deepseek-llm-7b").attention_kind == "MHA"
    assert ModelConfig.preset("deepseek-llm-67b").attention_kind == "GQA 8:1"
    assert ModelConfig.preset("tiny").replace(n_kv_heads=1).attention_kind == "MQA"


def test_unknown_preset_lists_the_choices():
    with pytest.raises(KeyError, match="deepseek-llm-67b"):
        ModelConfig.preset("deepseek-7b")


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(n_heads=6, n_kv_heads=4, d_model=48), r"n_heads \(6\) must be a multiple of n_kv_heads \(4\)"),
        (dict(d_model=66), r"d_model \(66\) must be divisible by n_heads \(4\)"),
        (dict(d_model=20, n_heads=4, n_kv_heads=2), r"head_dim = d_model / n_heads = 5 must be even"),
        (dict(n_layers=0), r"n_layers must be positive, got 0"),
        (dict(vocab_size=-3), r"vocab_size must be positive"),
        (dict(d_ff=2.5), r"d_ff must be an int"),
        (dict(norm_eps=0.0), r"norm_eps must be a positive number"),
    ],
)
def test_invalid_configs_name_field_and_rule(changes, message):
    with pytest.raises((ValueError, TypeError), match=message):
        ModelConfig.preset("tiny").replace(**changes)


def test_config_is_frozen():
    with pytest.raises(Exception):
        ModelConfig.preset("tiny").n_layers = 3


def test_from_hf_object_dict_and_path(tmp_path):
    from transformers import LlamaConfig

    cfg = ModelConfig.preset("deepseek-llm-67b")
    hf = LlamaConfig(**cfg.to_hf_dict())
    assert ModelConfig.from_hf(hf) == cfg
    assert ModelConfig.from_hf(hf.to_dict()) == cfg
    hf.save_pretrained(tmp_path)
    assert ModelConfig.from_hf(tmp_path) == cfg
    assert ModelConfig.from_hf(tmp_path / "config.json") == cfg


def test_from_hf_reads_the_published_7b_config(tmp_path):
    # The fields of deepseek-ai/deepseek-llm-7b-base/config.json (transformers 4 layout).
    published = {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "bos_token_id": 100000,
        "eos_token_id": 100001, "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
        "intermediate_size": 11008, "max_position_embeddings": 4096, "model_type": "llama",
        "num_attention_heads": 32, "num_hidden_layers": 30, "num_key_value_heads": 32, "pretraining_tp": 1,
        "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 10000.0, "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "use_cache": True, "vocab_size": 102400,
    }
    (tmp_path / "config.json").write_text(json.dumps(published))
    cfg = ModelConfig.from_hf(tmp_path)
    assert cfg.replace(init_std=0.006) == ModelConfig.preset("deepseek-llm-7b")


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(model_type="gemma2"), "model_type 'gemma2' is not supported"),
        (dict(hidden_act="gelu"), "hidden_act='gelu' is not supported"),
        (dict(tie_word_embeddings=True), "tie_word_embeddings=True is not supported"),
        (dict(attention_bias=True), "attention_bias=True is not supported"),
        (dict(rope_scaling={"rope_type": "linear", "factor": 2.0}), "rope_scaling .* is not supported"),
        (dict(head_dim=64), "head_dim 64 x num_attention_heads"),
        (dict(hidden_size=None), "lacks hidden_size"),
    ],
)
def test_from_hf_refuses_what_it_cannot_map(change, message):
    hf = ModelConfig.preset("tiny").to_hf_dict() | change
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_hf(hf)


def test_from_hf_bad_source():
    with pytest.raises(TypeError, match="config.json"):
        ModelConfig.from_hf(42)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        ModelConfig.from_hf("/nonexistent/folder")


def test_to_dict_rebuilds_the_config_and_omits_unused_latent_fields():
    from minids import ModelConfig

    for name in ("deepseek-llm-67b", "deepseek-moe-16b", "deepseek-v3", "deepseek-v2-lite"):
        cfg = ModelConfig.preset(name)
        assert ModelConfig(**cfg.to_dict()) == cfg
    assert "kv_lora_rank" not in ModelConfig.preset("deepseek-llm-67b").to_dict()  # older results files compare equal
    assert ModelConfig.preset("deepseek-v3").to_dict()["kv_lora_rank"] == 512
