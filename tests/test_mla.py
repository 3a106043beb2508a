"""Multi-head latent attention and the DeepSeek-V2/V3 family against transformers' DeepseekV3ForCausalLM and
DeepseekV2ForCausalLM on tiny random configs: logits, cached greedy decoding, the absorbed path, checkpoints in
and out, and the exact parameter counts of DeepSeek-V2-Lite and V3."""

import json

import pytest
import torch

from minids import DeepSeekLM, LatentKVCache, ModelConfig, count_params, generate, kv_cache_bytes
from minids.mla import MultiHeadLatentAttention
from minids.moe import route_v2v3
from minids.yarn import Yarn

from conftest import rel_err

transformers = pytest.importorskip("transformers")

YARN = Yarn(factor=4.0, original_max_seq_len=16, mscale=0.707, mscale_all_dim=0.707)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_v3(**changes) -> ModelConfig:
    """V3's layout at toy size: query latent, group-limited sigmoid routing, routed scaling, a dense first layer."""
    fields = dict(vocab_size=97, d_model=32, n_layers=3, n_heads=4, n_kv_heads=4, d_ff=48, max_seq_len=64,
                  kv_lora_rank=16, q_lora_rank=24, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=12,
                  rope_interleave=True, n_routed_experts=8, n_shared_experts=1, n_experts_per_token=2, moe_d_ff=16,
                  first_dense_layers=1, router_scoring="sigmoid", topk_method="noaux_tc", n_group=4, topk_group=2,
                  norm_topk_prob=True, routed_scaling=2.5)
    fields.update(changes)
    return ModelConfig(**fields)


def tiny_v2(**changes) -> ModelConfig:
    """V2-Lite's layout at toy size: no query latent, softmax routing (greedy or group-limited)."""
    fields = dict(vocab_size=97, d_model=32, n_layers=3, n_heads=4, n_kv_heads=4, d_ff=48, max_seq_len=64,
                  kv_lora_rank=16, q_lora_rank=None, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=12,
                  rope_interleave=True, n_routed_experts=8, n_shared_experts=2, n_experts_per_token=2, moe_d_ff=16,
                  first_dense_layers=1)
    fields.update(changes)
    return ModelConfig(**fields)


CASES = {
    "v3": tiny_v3(),
    "v3-no-q-lora-yarn": tiny_v3(q_lora_rank=None, rope_scaling=YARN),
    "v3-rotate-half": tiny_v3(rope_interleave=False, routed_scaling=1.0, n_group=1, topk_group=1),
    "v3-dense": tiny_v3(n_routed_experts=0, n_shared_experts=0, n_experts_per_token=0, moe_d_ff=None,
                        first_dense_layers=0, router_scoring="softmax", topk_method="greedy", n_group=None,
                        topk_group=None, norm_topk_prob=False, routed_scaling=1.0),
    "v2-lite": tiny_v2(),
    "v2-group-limited-yarn": tiny_v2(q_lora_rank=24, topk_method="group_limited_greedy", n_group=4, topk_group=2,
                                     routed_scaling=16.0, rope_scaling=YARN),
}


def hf_twin(config: ModelConfig):
    """transformers' model for config.to_hf_dict(), weights random (and V3's selection bias nonzero)."""
    hf = config.to_hf_dict()
    cls = {"deepseek_v3": (transformers.DeepseekV3Config, transformers.DeepseekV3ForCausalLM),
           "deepseek_v2": (transformers.DeepseekV2Config, transformers.DeepseekV2ForCausalLM)}[hf["model_type"]]
    ref = cls[1](cls[0].from_dict(hf)).eval()
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            p.copy_(1 + 0.2 * torch.randn_like(p) if "norm" in name else 0.15 * torch.randn_like(p))
        for name, buf in ref.named_buffers():
            if name.endswith("e_score_correction_bias"):
                buf.copy_(0.3 * torch.randn_like(buf))  # so that choosing and weighting differ
    return ref


@pytest.mark.parametrize("case", list(CASES))
def test_logits_equal_transformers(case):
    config = CASES[case]
    ref = hf_twin(config)
    model = DeepSeekLM.from_hf(ref).eval()
    assert model.config == config.replace(init_std=model.config.init_std)
    ids = torch.randint(0, config.vocab_size, (2, 40))  # 40 > 16: past YaRN's original context
    with torch.no_grad():
        want = ref(ids).logits
        assert rel_err(model(ids), want) <= 1e-5
        model.attn_impl = "einsum"
        assert rel_err(model(ids), want) <= 1e-5


@pytest.mark.parametrize("case", ["v3", "v2-group-limited-yarn"])
def test_cached_greedy_decoding_equals_transformers(case):
    config = CASES[case]
    ref = hf_twin(config)
    model = DeepSeekLM.from_hf(ref).eval()
    ids = torch.randint(0, config.vocab_size, (1, 7))
    with torch.no_grad():
        want = ref.generate(ids, max_new_tokens=12, do_sample=False, min_new_tokens=12, pad_token_id=0)
    got = generate(model, ids, max_new_tokens=12)  # absorbed path: one token at a time against the cache
    assert torch.equal(got, want)


@pytest.mark.parametrize("impl", ["sdpa", "einsum"])
def test_absorbed_equals_decompressed(impl):
    torch.manual_seed(0)
    config = tiny_v3(rope_scaling=YARN)
    attn = MultiHeadLatentAttention(config, impl=impl).double()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.3)
    model_rope = DeepSeekLM(config, device="meta").rope
    x = torch.randn(2, 11, config.d_model, dtype=torch.float64)
    cos, sin = (c.double() for c in model_rope(torch.arange(11)))
    outs = {}
    for path in ("decompressed", "absorbed"):
        attn.path = path
        outs[path] = attn(x, cos, sin)
    assert rel_err(outs["absorbed"], outs["decompressed"]) <= 1e-12


def test_absorbed_decoding_step_equals_decompressed_step():
    torch.manual_seed(0)
    model = DeepSeekLM(tiny_v3()).eval()
    ids = torch.randint(0, 97, (3, 9))
    logits = {}
    for path in ("decompressed", "absorbed"):
        for layer in model.layers:
            layer.self_attn.path = path
        cache = model.new_kv_cache(3, max_len=10)
        with torch.no_grad():
            model(ids[:, :8], cache)
            logits[path] = model(ids[:, 8:], cache)
    assert rel_err(logits["absorbed"], logits["decompressed"]) <= 1e-5
    with torch.no_grad():
        assert rel_err(logits["absorbed"], model(ids)[:, -1:]) <= 1e-5  # and both equal the full forward


def test_cache_holds_only_the_latent_and_the_rope_key():
    config = tiny_v3()
    cache = DeepSeekLM(config).new_kv_cache(2, max_len=10)
    assert isinstance(cache, LatentKVCache)
    assert [tuple(t.shape) for t in cache.latents] == [(2, 10, 16)] * 3
    assert [tuple(t.shape) for t in cache.rope_keys] == [(2, 10, 4)] * 3
    assert cache.nbytes == 3 * 2 * 10 * (16 + 4) * 4 == kv_cache_bytes(config, 10, batch=2, dtype=torch.float32)


# ---- the routers, alone ----------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["noaux_tc", "group_limited_greedy", "greedy"])
def test_router_equals_transformers(method):
    torch.manual_seed(0)
    v3 = method == "noaux_tc"
    config = tiny_v3() if v3 else tiny_v2(topk_method=method, n_group=4 if method != "greedy" else None,
                                          topk_group=2 if method != "greedy" else None, routed_scaling=1.5)
    ref = hf_twin(config).model.layers[1].mlp.gate
    u = torch.randn(50, config.d_model)
    _, want_w, want_i = ref(u)
    bias = ref.e_score_correction_bias if v3 else None
    r = route_v2v3(u @ ref.weight.T, config.n_experts_per_token, method, config.n_group, config.topk_group,
                   config.norm_topk_prob, config.routed_scaling, bias)
    order_ref, order = want_i.sort(dim=-1), r.experts.sort(dim=-1)
    assert torch.equal(order.values, order_ref.values)
    assert torch.allclose(r.weights.gather(-1, order.indices), want_w.gather(-1, order_ref.indices), atol=1e-6)


def test_group_limited_choice_stays_in_the_best_groups():
    # 4 groups of 2; the best single expert (7) is in group 3, but groups 0 and 1 win on their two best sums.
    logits = torch.tensor([[2.0, 1.9, 1.8, 1.7, -5.0, -5.0, -5.0, 2.5]])
    r = route_v2v3(logits, k=2, topk_method="noaux_tc", n_group=4, topk_group=2)
    assert sorted(r.experts[0].tolist()) == [0, 1]
    greedy = route_v2v3(logits, k=2, topk_method="greedy")  # softmax, no groups: 7 and 0
    assert sorted(greedy.experts[0].tolist()) == [0, 7]
    biased = route_v2v3(logits, k=2, topk_method="noaux_tc", n_group=4, topk_group=2,
                        bias=torch.tensor([0, 0, 0, 0, 0, 0, 0, 3.0]))  # bias lifts group 3 and expert 7
    assert 7 in biased.experts[0].tolist()
    assert torch.allclose(biased.weights[0], logits[0, biased.experts[0]].sigmoid())  # gates ignore the bias


# ---- checkpoints ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["v3", "v2-lite", "v3-dense"])
def test_save_hf_loads_in_transformers(case, tmp_path):
    config = CASES[case]
    torch.manual_seed(0)
    model = DeepSeekLM(config).eval()
    model.save_hf(tmp_path / "m")
    ref = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    assert type(ref).__name__ == json.loads((tmp_path / "m" / "config.json").read_text())["architectures"][0]
    ids = torch.randint(0, config.vocab_size, (1, 13))
    with torch.no_grad():
        assert rel_err(model(ids), ref(ids).logits) <= 1e-5
        again = DeepSeekLM.from_hf(tmp_path / "m").eval()
        assert torch.equal(again(ids), model(ids))


def test_v3_folder_with_an_mtp_layer_loads_without_it(tmp_path):
    ref = hf_twin(CASES["v3"])
    ref.save_pretrained(tmp_path / "m")
    from safetensors.torch import load_file, save_file
    state = load_file(tmp_path / "m" / "model.safetensors")
    state["model.layers.3.eh_proj.weight"] = torch.zeros(32, 64)  # the published checkpoint's layer 61
    save_file(state, tmp_path / "m" / "model.safetensors", metadata={"format": "pt"})
    model = DeepSeekLM.from_hf(tmp_path / "m").eval()
    ids = torch.randint(0, 97, (1, 9))
    with torch.no_grad():
        assert rel_err(model(ids), ref(ids).logits) <= 1e-5


def test_fp8_checkpoint_is_refused_with_a_message():
    hf = CASES["v3"].to_hf_dict()
    hf["quantization_config"] = {"quant_method": "fp8", "weight_block_size": [128, 128], "fmt": "e4m3"}
    with pytest.raises(ValueError, match=r"quantized \('fp8', block size \[128, 128\]\).*dequantize"):
        ModelConfig.from_hf(hf)


# ---- the published configs and their exact counts ------------------------------------------------------
V3_PUBLISHED = {  # deepseek-ai/DeepSeek-V3 config.json, the fields minids reads (FP8 quantization removed)
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "vocab_size": 129280,
    "hidden_size": 7168, "intermediate_size": 18432, "moe_intermediate_size": 2048, "num_hidden_layers": 61,
    "num_nextn_predict_layers": 1, "num_attention_heads": 128, "num_key_value_heads": 128, "n_shared_experts": 1,
    "n_routed_experts": 256, "ep_size": 1, "routed_scaling_factor": 2.5, "kv_lora_rank": 512, "q_lora_rank": 1536,
    "qk_rope_head_dim": 64, "v_head_dim": 128, "qk_nope_head_dim": 128, "topk_method": "noaux_tc", "n_group": 8,
    "topk_group": 4, "num_experts_per_tok": 8, "moe_layer_freq": 1, "first_k_dense_replace": 3,
    "norm_topk_prob": True, "scoring_func": "sigmoid", "hidden_act": "silu", "max_position_embeddings": 163840,
    "initializer_range": 0.02, "rms_norm_eps": 1e-06, "tie_word_embeddings": False, "rope_theta": 10000,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0,
                     "original_max_position_embeddings": 4096, "type": "yarn"},
    "attention_bias": False, "attention_dropout": 0.0,
}
V2_LITE_PUBLISHED = {  # deepseek-ai/DeepSeek-V2-Lite config.json, the fields minids reads
    "architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2", "vocab_size": 102400,
    "hidden_size": 2048, "intermediate_size": 10944, "moe_intermediate_size": 1408, "num_hidden_layers": 27,
    "num_attention_heads": 16, "num_key_value_heads": 16, "n_shared_experts": 2, "n_routed_experts": 64,
    "ep_size": 1, "routed_scaling_factor": 1.0, "kv_lora_rank": 512, "q_lora_rank": None, "qk_rope_head_dim": 64,
    "v_head_dim": 128, "qk_nope_head_dim": 128, "topk_method": "greedy", "n_group": 1, "topk_group": 1,
    "num_experts_per_tok": 6, "moe_layer_freq": 1, "first_k_dense_replace": 1, "norm_topk_prob": False,
    "scoring_func": "softmax", "aux_loss_alpha": 0.001, "seq_aux": True, "hidden_act": "silu",
    "max_position_embeddings": 163840, "initializer_range": 0.02, "rms_norm_eps": 1e-06,
    "tie_word_embeddings": False, "rope_theta": 10000, "attention_bias": False, "attention_dropout": 0.0,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 0.707, "mscale_all_dim": 0.707,
                     "original_max_position_embeddings": 4096, "type": "yarn"},
}


@pytest.mark.parametrize("name, published", [("deepseek-v3", V3_PUBLISHED), ("deepseek-v2-lite", V2_LITE_PUBLISHED)])
def test_published_configs_are_the_presets(name, published):
    preset = ModelConfig.preset(name)
    assert ModelConfig.from_hf(published) == preset.replace(init_std=0.02)
    assert ModelConfig.from_hf(preset.to_hf_dict()) == preset


# transformers' own count of the same configs on the meta device (and minids' modules): exact
@pytest.mark.parametrize("name, total", [("deepseek-v2-lite", 15_706_484_224), ("deepseek-v3", 671_026_404_352)])
def test_exact_counts_on_the_meta_device(name, total):
    config = ModelConfig.preset(name)
    assert DeepSeekLM(config, device="meta").num_parameters() == total == count_params(config).total
    if name == "deepseek-v3":
        return  # transformers' count of V3 (the same number) takes ~20 s to build; V2-Lite's stands for both
    with torch.device("meta"):
        hf = config.to_hf_dict()
        cls = transformers.DeepseekV3ForCausalLM if name == "deepseek-v3" else transformers.DeepseekV2ForCausalLM
        ref = cls(getattr(transformers, cls.__name__.replace("ForCausalLM", "Config")).from_dict(hf))
    assert sum(p.numel() for p in ref.parameters()) == total


def test_active_parameters_and_kv_bytes_of_v3():
    config = ModelConfig.preset("deepseek-v3")
    p = count_params(config)
    # one token uses attention, the router, the shared expert and 8 of 256 routed experts in each MoE layer
    moe_layer_all = 256 * 3 * 7168 * 2048 + 3 * 7168 * 2048 + 256 * 7168
    moe_layer_active = 8 * 3 * 7168 * 2048 + 3 * 7168 * 2048 + 256 * 7168
    assert p.total - p.active == 58 * (moe_layer_all - moe_layer_active)
    assert round(p.active / 1e9, 2) == 37.55 and round((p.active - p.embedding) / 1e9, 2) == 36.63
    assert kv_cache_bytes(config, 1) == 61 * (512 + 64) * 2 == 70_272
    assert kv_cache_bytes(ModelConfig.preset("deepseek-v2-lite"), 4096) == 27 * 576 * 2 * 4096


@pytest.mark.parametrize("changes, message", [
    (dict(n_kv_heads=2), r"n_kv_heads must equal n_heads \(4\)"),
    (dict(qk_rope_head_dim=5), r"qk_rope_head_dim \(5\) must be even"),
    (dict(v_head_dim=0), r"v_head_dim must be a positive int"),
    (dict(kv_lora_rank=None), r"given but kv_lora_rank is None"),
    (dict(n_group=3), r"n_routed_experts \(8\) must be a multiple of n_group \(3\)"),
    (dict(topk_group=5), r"topk_group \(5\) must be between 1 and n_group \(4\)"),
    (dict(router_scoring="softmax"), r"topk_method 'noaux_tc' goes with router_scoring 'sigmoid'"),
    (dict(topk_method="best"), r"topk_method must be one of"),
    (dict(n_group=8, topk_group=1, n_experts_per_token=2), r"groups of 1 experts hold fewer than"),
])
def test_invalid_mla_configs_say_what_is_wrong(changes, message):
    with pytest.raises(ValueError, match=message):
        tiny_v3(**changes)


def test_static_decoder_refuses_mla_with_a_pointer_to_generate():
    from minids.static_cache import StaticDecoder

    with pytest.raises(ValueError, match="multi-head latent attention .* minids.generate"):
        StaticDecoder(DeepSeekLM(tiny_v3()))


def test_yarn_frequencies_and_scales_equal_transformers():
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from transformers.models.deepseek_v3.modeling_deepseek_v3 import yarn_apply_mscale

    from minids.yarn import yarn_inv_freq

    for name in ("deepseek-v3", "deepseek-v2-lite"):
        config = ModelConfig.preset(name)
        hf = transformers.AutoConfig.for_model(**config.to_hf_dict())
        inv_freq, attention_factor = ROPE_INIT_FUNCTIONS["yarn"](hf, "cpu")
        assert torch.allclose(yarn_inv_freq(64, config.rope_theta, config.rope_scaling), inv_freq, rtol=1e-6)
        assert config.rope_scaling.attention_factor == pytest.approx(attention_factor)
        want = yarn_apply_mscale(hf.rope_parameters, 192 ** -0.5)  # DeepseekV3Attention.scaling's rule
        assert MultiHeadLatentAttention(config, device="meta").softmax_scale == pytest.approx(want)


def test_decode_flops_per_cached_token_of_both_paths():
    from minids.accounting import mla_decode_flops_per_token, matmul_flops_per_token

    v3 = ModelConfig.preset("deepseek-v3")
    per_key = {a: (mla_decode_flops_per_token(v3, 1, a) - mla_decode_flops_per_token(v3, 0, a)) / 61
               for a in (False, True)}
    # decompressed: kv_b_proj on the cached latent (2 x 512 x 128 x 256) + scores and values (2 x 128 x (192 + 128))
    assert per_key[False] == 2 * 512 * 128 * 256 + 2 * 128 * 320
    assert per_key[True] == 2 * 128 * (512 + 64) + 2 * 128 * 512  # absorbed: one 576-wide key, one 512-wide value
    # a prefill (decompressed, causal): 2 per weight plus 2 h (d_qk + d_v) per visible key
    tiny = tiny_v3()
    p = count_params(tiny)
    keys = 3 * (8 + 1) / 2
    assert matmul_flops_per_token(tiny, 8) == 2 * (p.attention + p.active_ffn + p.lm_head) + 2 * 4 * (12 + 12) * keys


def test_padded_batch_generation_equals_each_prompt_alone():
    torch.manual_seed(0)
    model = DeepSeekLM(tiny_v2(rope_scaling=YARN)).eval()
    prompts = [torch.randint(0, 97, (n,)) for n in (3, 9, 6)]
    together = generate(model, prompts, max_new_tokens=6)  # left-padded, one latent cache for the batch
    for prompt, got in zip(prompts, together):
        assert torch.equal(got, generate(model, prompt[None], max_new_tokens=6)[0])
