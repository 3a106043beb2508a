"""DeepSeekMoE in the whole model: config fields, deepseek-moe-16b's exact counts, its checkpoint format in and
out (against Llama layers whose FFN is transformers' DeepseekV2Moe), and training with the balance loss."""

import json

import pytest
import torch

from minids import CheckpointError, DeepSeekLM, ModelConfig, count_params, matmul_flops_per_token
from minids.moe import DeepSeekMoE
from minids.train import TrainConfig, lm_loss, train

from conftest import rel_err
from test_moe import hf_reference, minids_state_from_hf

# ../shared/FACTS.md section 8: counted from deepseek-moe-16b-base's config.json.
MOE_16B_TOTAL, MOE_16B_ACTIVE, MOE_16B_ACTIVE_NON_EMBEDDING = 16_375_728_128, 2_828_650_496, 2_409_220_096

# The fields of deepseek-ai/deepseek-moe-16b-base/config.json that minids reads (FACTS section 8).
PUBLISHED_16B = {
    "architectures": ["DeepseekForCausalLM"], "model_type": "deepseek", "vocab_size": 102400, "hidden_size": 2048,
    "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 16, "intermediate_size": 10944,
    "moe_intermediate_size": 1408, "n_routed_experts": 64, "n_shared_experts": 2, "num_experts_per_tok": 6,
    "first_k_dense_replace": 1, "moe_layer_freq": 1, "scoring_func": "softmax", "norm_topk_prob": False,
    "aux_loss_alpha": 0.001, "seq_aux": True, "rms_norm_eps": 1e-6, "rope_theta": 10000,
    "max_position_embeddings": 4096, "tie_word_embeddings": False, "hidden_act": "silu", "initializer_range": 0.02,
    "torch_dtype": "bfloat16",
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # As in test_train.py: tiny models gain nothing from a second thread, and OpenMP's spinning threads can
    # make a step many times slower on a shared CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_moe(**changes) -> ModelConfig:
    fields = dict(vocab_size=97, d_model=48, n_layers=3, n_heads=4, n_kv_heads=4, d_ff=96, max_seq_len=64,
                  n_routed_experts=6, n_shared_experts=2, n_experts_per_token=2, moe_d_ff=40, first_dense_layers=1)
    fields.update(changes)
    return ModelConfig(**fields)


# ---- config ----------------------------------------------------------------------------------------------
def test_published_16b_config_is_the_preset():
    assert ModelConfig.from_hf(PUBLISHED_16B) == ModelConfig.preset("deepseek-moe-16b").replace(init_std=0.02)
    cfg = ModelConfig.preset("deepseek-moe-16b")
    assert ModelConfig.from_hf(cfg.to_hf_dict()) == cfg
    assert cfg.to_hf_dict()["model_type"] == "deepseek" and cfg.n_moe_layers == 27


def test_dense_configs_are_unchanged():
    cfg = ModelConfig.preset("deepseek-llm-7b")
    assert not cfg.is_moe and cfg.n_moe_layers == 0 and "n_routed_experts" not in cfg.to_hf_dict()
    p = count_params(cfg)
    assert p.active == p.total and p.active_non_embedding == p.non_embedding


def test_repr_names_the_moe_fields_only_when_used():
    assert "expert" not in repr(ModelConfig.preset("deepseek-llm-7b"))
    moe = repr(ModelConfig.preset("deepseek-moe-16b"))
    assert "n_routed_experts=64" in moe and "first_dense_layers=1" in moe and "router_scoring" not in moe
    assert eval(moe, {"ModelConfig": ModelConfig}) == ModelConfig.preset("deepseek-moe-16b")


@pytest.mark.parametrize("changes, message", [
    (dict(n_experts_per_token=7), r"n_experts_per_token \(7\) must be between 1 and n_routed_experts \(6\)"),
    (dict(n_experts_per_token=0), r"n_experts_per_token \(0\) must be between 1"),
    (dict(moe_d_ff=None), r"needs moe_d_ff, the width of one expert"),
    (dict(first_dense_layers=3), r"first_dense_layers \(3\) must be below n_layers \(3\)"),
    (dict(n_routed_experts=0), r"n_shared_experts=2, n_experts_per_token=2, moe_d_ff=40, first_dense_layers=1 "
                               r"given but n_routed_experts is 0"),
    (dict(n_shared_experts=-1), r"n_shared_experts must be an int >= 0, got -1"),
    (dict(router_scoring="relu"), r"router_scoring must be 'softmax' \(DeepSeekMoE\) or 'sigmoid' \(V3\)"),
    (dict(aux_loss_alpha=-0.1), r"aux_loss_alpha must be a number >= 0"),
    (dict(norm_topk_prob=1), r"norm_topk_prob must be True or False"),
])
def test_invalid_moe_configs_say_what_is_wrong(changes, message):
    with pytest.raises((ValueError, TypeError), match=message):
        tiny_moe(**changes)


@pytest.mark.parametrize("key, value", [("moe_layer_freq", 2), ("topk_method", "group_limited_greedy"),
                                        ("n_group", 8), ("hidden_act", "gelu")])
def test_from_hf_refuses_what_minids_does_not_implement(key, value):
    with pytest.raises(ValueError, match=key):
        ModelConfig.from_hf(PUBLISHED_16B | {key: value})


def test_to_hf_dict_refuses_what_deepseek_moe_cannot_say():
    with pytest.raises(ValueError, match="router_scoring='sigmoid'"):
        tiny_moe(router_scoring="sigmoid").to_hf_dict()


# ---- counts ----------------------------------------------------------------------------------------------
def test_deepseek_moe_16b_exact_counts_on_meta():
    cfg = ModelConfig.preset("deepseek-moe-16b")
    model = DeepSeekLM(cfg, device="meta")
    p = count_params(cfg)
    assert model.num_parameters() == p.total == MOE_16B_TOTAL
    assert p.active == MOE_16B_ACTIVE and p.active_non_embedding == MOE_16B_ACTIVE_NON_EMBEDDING
    # Active, counted from the modules: everything but the routed experts, plus k of them per MoE layer.
    moes = [layer.mlp for layer in model.layers if isinstance(layer.mlp, DeepSeekMoE)]
    routed = sum(p.numel() for m in moes for p in m.experts.parameters())
    one_expert = sum(p.numel() for p in moes[0].experts[0].parameters())
    assert p.routed_experts == routed
    assert model.num_parameters() - routed + len(moes) * cfg.n_experts_per_token * one_expert == MOE_16B_ACTIVE


def test_flops_count_only_the_active_experts():
    cfg = tiny_moe()
    every_expert_active = cfg.replace(n_routed_experts=2)  # k = E: nothing is skipped
    router = 2 * cfg.n_moe_layers * cfg.d_model * (6 - 2)  # the only extra work: scoring 4 more experts
    assert matmul_flops_per_token(cfg, 32) - matmul_flops_per_token(every_expert_active, 32) == router
    assert count_params(cfg).total > count_params(every_expert_active).total


# ---- checkpoints: deepseek-moe-16b's format --------------------------------------------------------------
def reference_model(cfg: ModelConfig):
    """deepseek-moe-16b's architecture from transformers parts: Llama layers (the same attention, norms and
    dense FFN as DeepSeek LLM) whose FFN past the first dense layers is a DeepseekV2Moe set up as DeepSeekMoE."""
    from transformers import LlamaConfig, LlamaForCausalLM

    dense = {k: v for k, v in cfg.to_dict().items() if k in ("vocab_size", "d_model", "n_layers", "n_heads",
                                                            "n_kv_heads", "d_ff", "max_seq_len", "norm_eps")}
    hf = LlamaConfig(**ModelConfig(**dense).to_hf_dict())
    hf._attn_implementation = "eager"
    model = LlamaForCausalLM(hf).eval()
    for i in range(cfg.first_dense_layers, cfg.n_layers):
        model.model.layers[i].mlp = hf_reference(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.uniform_(0.5, 1.5) if name.endswith("norm.weight") else p.normal_(0, 0.1)
    return model


def checkpoint_state(ref) -> dict[str, torch.Tensor]:
    """The reference's weights under deepseek-moe-16b's checkpoint names (experts one module each)."""
    state = {}
    for i, layer in enumerate(ref.model.layers):
        for k, v in layer.state_dict().items():
            if not k.startswith("mlp."):
                state[f"model.layers.{i}.{k}"] = v
        mlp = layer.mlp.state_dict() if not hasattr(layer.mlp, "experts") else minids_state_from_hf(layer.mlp)
        state |= {f"model.layers.{i}.mlp.{k}": v for k, v in mlp.items()}
    state |= {"model.embed_tokens.weight": ref.model.embed_tokens.weight, "model.norm.weight": ref.model.norm.weight,
              "lm_head.weight": ref.lm_head.weight}
    return {k: v.detach().contiguous() for k, v in state.items()}


def write_folder(folder, cfg, state):
    from safetensors.torch import save_file

    config = {k: v for k, v in PUBLISHED_16B.items() if k not in ("torch_dtype", "initializer_range")} | {
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model, "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads, "intermediate_size": cfg.d_ff,
        "moe_intermediate_size": cfg.moe_d_ff, "n_routed_experts": cfg.n_routed_experts,
        "n_shared_experts": cfg.n_shared_experts, "num_experts_per_tok": cfg.n_experts_per_token,
        "first_k_dense_replace": cfg.first_dense_layers, "max_position_embeddings": cfg.max_seq_len,
        "torch_dtype": "float32"}
    (folder / "config.json").write_text(json.dumps(config))
    save_file(state, str(folder / "model.safetensors"))


def test_loads_a_deepseek_moe_folder_and_gives_it_back(tmp_path):
    cfg = tiny_moe()
    ref = reference_model(cfg)
    state = checkpoint_state(ref)
    assert "model.layers.2.mlp.experts.5.down_proj.weight" in state and "model.layers.0.mlp.up_proj.weight" in state
    write_folder(tmp_path, cfg, state)
    model = DeepSeekLM.from_hf(tmp_path).eval()
    assert model.config == cfg.replace(aux_loss_alpha=0.001, aux_loss_per_sequence=True)
    ids = torch.randint(0, cfg.vocab_size, (2, 19))
    with torch.no_grad():
        assert rel_err(model(ids), ref(ids).logits) <= 1e-5
    back = model.to_hf_state_dict()
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)


def test_a_missing_expert_is_named(tmp_path):
    cfg = tiny_moe()
    state = checkpoint_state(reference_model(cfg))
    del state["model.layers.1.mlp.experts.3.gate_proj.weight"]
    write_folder(tmp_path, cfg, state)
    with pytest.raises(CheckpointError, match=r"1 missing: model.layers.1.mlp.experts.3.gate_proj.weight"):
        DeepSeekLM.from_hf(tmp_path)


def test_save_hf_round_trip(tmp_path):
    model = DeepSeekLM(tiny_moe()).eval()
    model.save_hf(tmp_path / "m")
    again = DeepSeekLM.from_hf(tmp_path / "m").eval()
    ids = torch.randint(0, 97, (1, 9))
    with torch.no_grad():
        assert torch.equal(again(ids), model(ids))


# ---- the model's MoE hooks and training ------------------------------------------------------------------
def test_aux_loss_and_load_after_a_forward():
    model = DeepSeekLM(tiny_moe(aux_loss_alpha=0.01))
    assert model.moe_aux_loss().item() == 0 and len(model.moe_layers()) == 2
    model(torch.randint(0, 97, (3, 10)))
    assert model.moe_aux_loss().requires_grad
    assert model.moe_aux_loss().item() == pytest.approx(sum(0.01 * m.balance.item() for m in model.moe_layers()))
    assert model.expert_load().shape == (2, 6) and (model.expert_load().sum(-1) == 3 * 10 * 2).all()
    dense = DeepSeekLM(ModelConfig.preset("tiny"))
    dense(torch.randint(0, 256, (1, 4)))
    assert dense.moe_aux_loss().item() == 0 and dense.moe_layers() == []


def batches(cfg, batch=8, seq=32):
    """A learnable stream: each sequence counts up from a random start (mod vocab)."""
    def get_batch(step, generator):
        start = torch.randint(0, cfg.vocab_size, (batch, 1), generator=generator)
        ids = (start + torch.arange(seq + 1)) % cfg.vocab_size
        return ids[:, :-1], ids[:, 1:]
    return get_batch


def test_one_training_step_adds_the_balance_loss():
    """train()'s step against the same step by hand: loss = LM loss + alpha_1 sum f_i P_i, then AdamW."""
    cfg = tiny_moe(aux_loss_alpha=0.05)
    tc = TrainConfig(steps=1, batch_size=4, seq_len=16, peak_lr=1e-2, warmup_steps=0, seed=1)
    torch.manual_seed(0)
    model = DeepSeekLM(cfg)
    by_hand = DeepSeekLM(cfg)
    by_hand.load_state_dict(model.state_dict())
    history = train(model, batches(cfg, 4, 16), tc, progress=False)
    x, y = batches(cfg, 4, 16)(0, torch.Generator().manual_seed(1))
    decay = [p for p in by_hand.parameters() if p.ndim >= 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": [p for p in by_hand.parameters() if p.ndim < 2], "weight_decay": 0.0}],
                            lr=1e-2, betas=(0.9, 0.95))
    lm = lm_loss(by_hand(x), y)
    aux = by_hand.moe_aux_loss()
    (lm + aux).backward()
    torch.nn.utils.clip_grad_norm_(by_hand.parameters(), 1.0)
    opt.step()
    assert history["losses"][0] == pytest.approx(lm.item()) and history["aux_losses"][0] == pytest.approx(aux.item())
    for (name, a), b in zip(model.named_parameters(), by_hand.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name


@pytest.mark.parametrize("balance", [dict(aux_loss_alpha=0.01), dict(bias_update_speed=0.001)])
def test_a_small_moe_model_learns_on_cpu(balance):
    cfg = tiny_moe(**balance)
    torch.manual_seed(0)
    model = DeepSeekLM(cfg)
    tc = TrainConfig(steps=40, batch_size=8, seq_len=32, peak_lr=1e-2, warmup_steps=4, seed=0)
    history = train(model, batches(cfg), tc, progress=False)
    first, last = sum(history["losses"][:5]) / 5, sum(history["losses"][-5:]) / 5
    assert last < 0.7 * first
    assert len(history["aux_losses"]) == 40
    if "bias_update_speed" in balance:
        assert all(m.expert_bias.abs().sum() > 0 for m in model.moe_layers())
