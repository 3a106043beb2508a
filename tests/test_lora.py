"""LoRA through peft (minids.lora): adapters trained on minids apply unchanged to transformers' Llama twin."""

import json

import peft  # requirements.txt pins it: a missing peft fails here, it is not skipped
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from minids import DeepSeekLM, ModelConfig, lora
from minids.train import TrainConfig, train

from conftest import rel_err, tiny_config

# peft asks transformers' Llama a deprecated question when it wraps it; nothing minids can change
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")


def twin(cfg: ModelConfig, hf_state: dict) -> LlamaForCausalLM:
    """transformers' LlamaForCausalLM holding the same weights."""
    ref = LlamaForCausalLM(LlamaConfig(**cfg.to_hf_dict())).eval()
    ref.load_state_dict(hf_state, strict=True)
    return ref


def trained_adapter(cfg: ModelConfig, targets="all", steps=4):
    """A DeepSeekLM with random weights and a LoRA adapter trained a few steps by minids' own loop, so that B
    is no longer zero. Returns (peft model, the base weights under Llama names, the base weights as they were)."""
    model = DeepSeekLM(cfg)
    hf_state = {k: v.clone() for k, v in model.to_hf_state_dict().items()}
    pm = lora.apply_lora(model, r=4, alpha=8, targets=targets)
    gen = torch.Generator().manual_seed(1)
    data = torch.randint(0, cfg.vocab_size, (8, 17), generator=gen)
    train(pm, lambda step, g: (data[:, :-1], data[:, 1:]),
          TrainConfig(steps=steps, batch_size=8, seq_len=16, peak_lr=3e-2, warmup_steps=0), progress=False)
    return pm.eval(), hf_state


def test_training_moves_only_the_adapter():
    cfg = tiny_config(8, 2)
    pm, hf_state = trained_adapter(cfg)
    for name, p in pm.named_parameters():
        if "lora_B" in name:
            assert p.abs().max() > 0, name  # B left zero: the adapter would change nothing
    # the base weights are exactly the pre-trained ones: peft froze them, AdamW never saw them
    base = {lora.to_llama_key(k)[len(lora.PREFIX):].replace(".base_layer", ""): v
            for k, v in pm.state_dict().items() if "lora_" not in k}
    assert set(base) == set(hf_state)
    assert all(torch.equal(base[k], hf_state[k]) for k in hf_state)


@pytest.mark.parametrize("targets", ["attn", "all"])
def test_saved_adapter_loads_onto_the_transformers_twin_with_the_same_logits(tmp_path, targets):
    cfg = tiny_config(8, 2)  # GQA: k_proj and v_proj are narrower than q_proj
    pm, hf_state = trained_adapter(cfg, targets)
    folder = lora.save_adapter(pm, tmp_path / "adapter")
    with open(folder / "adapter_config.json") as f:
        saved = json.load(f)
    assert sorted(saved["target_modules"]) == sorted(lora.TARGETS[targets]) and saved["task_type"] is None
    from safetensors.torch import load_file

    keys = set(load_file(folder / "adapter_model.safetensors"))
    assert "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight" in keys
    assert all(k.startswith("base_model.model.model.layers.") for k in keys)

    ref = twin(cfg, hf_state)
    ids = torch.randint(0, cfg.vocab_size, (3, 19))
    with torch.no_grad():
        base_logits = ref(ids).logits
        ref_lora = peft.PeftModel.from_pretrained(ref, str(folder)).eval()  # peft's own loader, as it is
        expected = ref_lora(ids).logits
        got = pm(ids)
    assert rel_err(expected, base_logits) > 1e-3  # the adapter really changed the twin's outputs
    assert rel_err(got, expected) <= 1e-5


def test_merge_gives_the_unmerged_logits():
    cfg = tiny_config(8, 2)
    pm, _ = trained_adapter(cfg)
    ids = torch.randint(0, cfg.vocab_size, (2, 23))
    with torch.no_grad():
        unmerged = pm(ids)
        merged = lora.merge(pm)
        assert type(merged) is DeepSeekLM
        assert not any("lora" in n for n, _ in merged.named_parameters())
        assert rel_err(merged(ids), unmerged) <= 1e-5


def test_load_adapter_round_trip_and_the_plain_peft_form(tmp_path):
    cfg = tiny_config(4, 2)
    pm, hf_state = trained_adapter(cfg, targets=["q_proj", "down_proj"])
    lora.save_adapter(pm, tmp_path / "llama_form")
    pm.save_pretrained(str(tmp_path / "peft_form"))  # peft's own save: keys without the "model." level
    ids = torch.randint(0, cfg.vocab_size, (2, 9))
    with torch.no_grad():
        expected = pm(ids)
    for form in ("llama_form", "peft_form"):
        fresh = DeepSeekLM.from_hf(twin(cfg, hf_state))
        loaded = lora.load_adapter(fresh, tmp_path / form).eval()
        assert lora.trainable_params(loaded) == 0  # loaded for inference unless trainable=True
        with torch.no_grad():
            assert torch.equal(loaded(ids), expected), form
    again = lora.load_adapter(DeepSeekLM.from_hf(twin(cfg, hf_state)), tmp_path / "llama_form", trainable=True)
    assert lora.trainable_params(again) == lora.lora_param_count(cfg, 4, ["q_proj", "down_proj"])


def test_an_adapter_made_on_a_llama_loads_onto_minids(tmp_path):
    cfg = tiny_config(8, 2)
    ref = LlamaForCausalLM(LlamaConfig(**cfg.to_hf_dict())).eval()
    model = DeepSeekLM.from_hf(ref)  # before peft wraps ref's projections in place
    ref_lora = peft.get_peft_model(ref, peft.LoraConfig(r=2, target_modules=["v_proj", "up_proj"]))
    with torch.no_grad():
        for name, p in ref_lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    ref_lora.save_pretrained(str(tmp_path / "from_llama"))
    model = lora.load_adapter(model, tmp_path / "from_llama").eval()
    ids = torch.randint(0, cfg.vocab_size, (2, 12))
    with torch.no_grad():
        assert rel_err(model(ids), ref_lora(ids).logits) <= 1e-5


@pytest.mark.parametrize("targets", ["attn", "mlp", "all", ["k_proj"], ["gate_proj", "o_proj"]])
@pytest.mark.parametrize("r", [1, 8])
def test_the_count_from_the_config_is_peft_count(targets, r):
    cfg = tiny_config(8, 2, d_ff=72)
    pm = lora.apply_lora(DeepSeekLM(cfg), r=r, targets=targets)
    assert lora.lora_param_count(cfg, r, targets) == lora.trainable_params(pm) == pm.get_nb_trainable_parameters()[0]


@pytest.mark.parametrize("preset", ["deepseek-llm-7b", "deepseek-llm-67b"])
def test_the_count_at_full_size_is_peft_count_on_the_meta_device(preset):
    cfg = ModelConfig.preset(preset)
    pm = lora.apply_lora(DeepSeekLM(cfg, device="meta"), r=8, targets="all")  # shapes only, no memory
    assert lora.trainable_params(pm) == lora.lora_param_count(cfg, 8, "all")


def test_bad_input_fails_with_what_is_allowed(tmp_path):
    cfg = tiny_config()
    for kwargs, message in ((dict(r=0), "positive int"), (dict(r=2.0), "positive int"), (dict(alpha=-1), "alpha"),
                            (dict(targets="everything"), "attn, mlp, all"), (dict(targets=["lm_head"]), "never wraps"),
                            (dict(targets=["q_proj", "wq"]), "'wq'"), (dict(targets=[]), "empty"),
                            (dict(dropout=1.0), "dropout")):
        with pytest.raises(ValueError, match=message):
            lora.apply_lora(DeepSeekLM(cfg), **kwargs)
    with pytest.raises(TypeError, match="DeepSeekLM"):
        lora.apply_lora(torch.nn.Linear(2, 2))
    pm = lora.apply_lora(DeepSeekLM(cfg))
    with pytest.raises(TypeError, match="already carries adapters"):
        lora.apply_lora(pm)
    with pytest.raises(TypeError, match="peft model"):
        lora.save_adapter(DeepSeekLM(cfg), tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        lora.load_adapter(DeepSeekLM(cfg), tmp_path / "nothing")
    lora.save_adapter(pm, tmp_path / "a")
    for other, message in ((DeepSeekLM(cfg.replace(n_kv_heads=1)), "mis-shaped .*k_proj"),
                           (DeepSeekLM(cfg.replace(n_layers=3)), "8 missing .*layers.2"),
                           (DeepSeekLM(cfg.replace(n_layers=1)), "8 unexpected .*layers.1")):
        with pytest.raises(ValueError, match=message):
            lora.load_adapter(other, tmp_path / "a")
        assert not any("lora" in n for n, _ in other.named_parameters())  # nothing half-applied
