"""minids against the outside reference: transformers' LlamaForCausalLM on the same random weights."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from minids import CheckpointError, DeepSeekLM, ModelConfig

from conftest import LAYOUTS, rel_err, tiny_config


def reference(cfg: ModelConfig) -> LlamaForCausalLM:
    hf = LlamaConfig(**cfg.to_hf_dict())
    hf._attn_implementation = "eager"  # the reference's plainest path
    model = LlamaForCausalLM(hf).eval()
    with torch.no_grad():  # random norms too, so that a swapped norm weight would show
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0, 0.05)
    return model


@pytest.mark.parametrize("impl", ["sdpa", "einsum"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("batch, seq", [(1, 1), (3, 17), (2, 64)])
def test_logits_match_transformers(layout, impl, batch, seq):
    cfg = tiny_config(*LAYOUTS[layout])
    ref = reference(cfg)
    model = DeepSeekLM.from_hf(ref).eval()
    model.attn_impl = impl
    ids = torch.randint(0, cfg.vocab_size, (batch, seq))
    with torch.no_grad():
        expected, got = ref(ids).logits, model(ids)
    assert got.shape == (batch, seq, cfg.vocab_size)
    assert rel_err(got, expected) <= 1e-5


def test_loads_sharded_save_pretrained_folder(tmp_path):
    cfg = tiny_config(8, 2, n_layers=3)
    ref = reference(cfg)
    ref.save_pretrained(tmp_path, max_shard_size="50KB")  # forces several *.safetensors shards
    assert len(list(tmp_path.glob("*.safetensors"))) > 1
    model = DeepSeekLM.from_hf(tmp_path).eval()
    assert model.config == cfg.replace(init_std=ref.config.initializer_range)
    ids = torch.randint(0, cfg.vocab_size, (2, 29))
    with torch.no_grad():
        assert rel_err(model(ids), ref(ids).logits) <= 1e-5


def test_loads_in_the_dtype_asked_for(tmp_path):
    ref = reference(tiny_config())
    ref.save_pretrained(tmp_path)
    model = DeepSeekLM.from_hf(tmp_path, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert torch.equal(model.lm_head.weight, ref.lm_head.weight.to(torch.bfloat16))


def test_to_hf_state_dict_round_trip():
    cfg = tiny_config(8, 1)
    model = DeepSeekLM(cfg).eval()
    state = model.to_hf_state_dict()
    assert "model.layers.1.self_attn.k_proj.weight" in state and "lm_head.weight" in state
    ref = LlamaForCausalLM(LlamaConfig(**cfg.to_hf_dict())).eval()
    ref.load_state_dict(state, strict=True)
    ids = torch.randint(0, cfg.vocab_size, (2, 11))
    with torch.no_grad():
        assert rel_err(model(ids), ref(ids).logits) <= 1e-5


def _save_state(tmp_path, cfg, state):
    from safetensors.torch import save_file

    LlamaConfig(**cfg.to_hf_dict()).save_pretrained(tmp_path)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))


def test_missing_unexpected_and_misshaped_weights_are_listed(tmp_path):
    cfg = tiny_config()
    state = DeepSeekLM(cfg).to_hf_state_dict()
    del state["model.layers.1.mlp.up_proj.weight"]
    state["model.layers.0.self_attn.q_bias"] = torch.zeros(3)
    state["model.norm.weight"] = torch.ones(cfg.d_model + 1)
    _save_state(tmp_path, cfg, state)
    with pytest.raises(CheckpointError) as err:
        DeepSeekLM.from_hf(tmp_path)
    message = str(err.value)
    assert "1 missing: model.layers.1.mlp.up_proj.weight" in message
    assert "1 unexpected: model.layers.0.self_attn.q_bias" in message
    assert f"model.norm.weight: checkpoint ({cfg.d_model + 1},), model ({cfg.d_model},)" in message


def test_old_rotary_buffers_are_ignored(tmp_path):
    cfg = tiny_config()
    model = DeepSeekLM(cfg)
    state = model.to_hf_state_dict() | {"model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(8)}
    _save_state(tmp_path, cfg, state)
    assert torch.equal(DeepSeekLM.from_hf(tmp_path).lm_head.weight, model.lm_head.weight)


def test_bad_source():
    with pytest.raises(FileNotFoundError, match="/no/such/folder does not exist: no such folder"):
        DeepSeekLM.from_hf("/no/such/folder")
    with pytest.raises(TypeError, match="LlamaForCausalLM or a folder"):
        DeepSeekLM.from_hf(42)
