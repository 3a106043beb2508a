import pytest
import torch
from einops import repeat
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

from minids import DeepSeekLM
from minids.attention import decode_attention
from minids.generate import generate, sample_next, stream_generate, top_k_filter, top_p_filter
from minids.static_cache import StaticDecoder, fuse_projections, is_fused, static_decode_step, unfuse_projections

from conftest import LAYOUTS, rel_err, tiny_config


def make_model(layout="gqa8", **overrides):
    # init_std 0.05 (not the paper's 0.006) so that random logits are far from ties and argmax is stable
    return DeepSeekLM(tiny_config(*LAYOUTS[layout], init_std=0.05, **overrides)).eval()


@torch.no_grad()
def greedy_without_cache(model, ids, n):
    for _ in range(n):  # recompute the whole sequence every step: slow, obviously right
        ids = torch.cat([ids, model(ids)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids


@pytest.mark.parametrize("layout", ["mha", "gqa8"])  # every layout's cache: tests/test_kv_cache.py
def test_greedy_equals_recomputing_without_cache(layout):
    model = make_model(layout)
    ids = torch.randint(0, 97, (2, 7))
    out = generate(model, ids, max_new_tokens=12)
    assert out.shape == (2, 19) and out.dtype == torch.long
    assert torch.equal(out, greedy_without_cache(model, ids, 12))


@pytest.mark.parametrize("layout", ["mha", "gqa8"])
def test_greedy_equals_transformers_generate(layout):
    n_heads, n_kv_heads = LAYOUTS[layout]
    cfg = tiny_config(n_heads, n_kv_heads, init_std=0.05)
    ref = LlamaForCausalLM(LlamaConfig(**cfg.to_hf_dict())).eval()  # random weights, N(0, 0.05)
    ref.generation_config.eos_token_id = None  # run all max_new_tokens, as minids does without eos_id
    model = DeepSeekLM.from_hf(ref)
    ids = torch.randint(0, cfg.vocab_size, (2, 5))
    expected = ref.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False,
                            pad_token_id=0)
    assert torch.equal(generate(model, ids, max_new_tokens=24), expected)


def test_stream_yields_the_tokens_of_generate_one_step_at_a_time():
    model = make_model()
    ids = torch.randint(0, 97, (2, 4))
    steps = list(stream_generate(model, ids, max_new_tokens=6))
    assert len(steps) == 6 and all(s.shape == (2,) for s in steps)
    assert torch.equal(torch.stack(steps, dim=1), generate(model, ids, 6)[:, 4:])


def test_sampling_is_reproducible_with_a_generator():
    model = make_model()
    ids = torch.randint(0, 97, (2, 4))
    kw = dict(max_new_tokens=16, temperature=1.5, top_k=20, top_p=0.9)
    a = generate(model, ids, generator=torch.Generator().manual_seed(1), **kw)
    b = generate(model, ids, generator=torch.Generator().manual_seed(1), **kw)
    c = generate(model, ids, generator=torch.Generator().manual_seed(2), **kw)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)  # 32 draws at temperature 1.5 agreeing by chance: negligible
    assert not torch.equal(a, generate(model, ids, 16))  # and it is not greedy


def test_top_k_1_and_a_tiny_top_p_are_greedy():
    model = make_model()
    ids = torch.randint(0, 97, (2, 4))
    greedy = generate(model, ids, 10)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(generate(model, ids, 10, temperature=2.0, top_k=1, generator=g), greedy)
    assert torch.equal(generate(model, ids, 10, temperature=2.0, top_p=1e-6, generator=g), greedy)


def test_filters_match_transformers_warpers():
    logits = torch.randn(4, 97)
    for k in (1, 5, 97):
        ref = TopKLogitsWarper(top_k=k)(None, logits.clone())
        assert torch.equal(top_k_filter(logits, k).isinf(), ref.isinf())
    for p in (0.1, 0.5, 0.9, 1.0):
        ref = TopPLogitsWarper(top_p=p)(None, logits.clone())
        assert torch.equal(top_p_filter(logits, p).isinf(), ref.isinf())


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = lambda p: (~top_p_filter(logits, p).isinf()).sum().item()  # noqa: E731
    assert [kept(p) for p in (0.4, 0.5, 0.6, 0.8, 0.81, 0.96, 1.0)] == [1, 1, 2, 2, 3, 4, 4]


def test_sample_next_follows_the_distribution():
    logits = torch.tensor([[0.0, 1.0, 2.0]]).expand(20000, 3)
    draws = sample_next(logits, temperature=1.0, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=3).float() / len(draws)
    assert torch.allclose(freq, logits[0].softmax(-1), atol=0.015)


def test_eos_stops_generation_and_pads_finished_rows_like_transformers():
    cfg = tiny_config(8, 1, init_std=0.05)
    ref = LlamaForCausalLM(LlamaConfig(**cfg.to_hf_dict())).eval()
    model = DeepSeekLM.from_hf(ref)
    ids = torch.randint(0, cfg.vocab_size, (2, 4))
    greedy = generate(model, ids, 12)
    eos = int(greedy[0, 4 + 2])  # row 0 produces it by its 3rd new token at the latest
    out = generate(model, ids, 12, eos_id=eos)
    first = int((greedy[0, 4:] == eos).nonzero()[0])
    assert torch.equal(out[0, : 4 + first + 1], greedy[0, : 4 + first + 1]) and (out[0, 4 + first :] == eos).all()
    expected = ref.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                            eos_token_id=eos, pad_token_id=eos)
    assert torch.equal(out, expected)  # same stopping rule and the same padding of finished rows
    assert torch.equal(generate(model, ids[:1], 12, eos_id=eos), greedy[:1, : 4 + first + 1])


def test_zero_new_tokens_returns_the_prompt():
    model = make_model()
    ids = torch.randint(0, 97, (1, 4))
    assert torch.equal(generate(model, ids, 0), ids)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(max_new_tokens=-1), ValueError, "max_new_tokens must be an int >= 0, got -1"),
        (dict(max_new_tokens=61), ValueError, r"prompt \(4\) \+ max_new_tokens \(61\) = 65 tokens exceeds .*\(64\)"),
        (dict(temperature=-0.5), ValueError, "temperature must be a number >= 0"),
        (dict(top_k=0), ValueError, "top_k must be None or an int >= 1, got 0"),
        (dict(top_p=0.0), ValueError, r"top_p must be None or a number in \(0, 1\], got 0.0"),
        (dict(top_p=1.5), ValueError, r"top_p must be None or a number in \(0, 1\], got 1.5"),
        (dict(eos_id=97), ValueError, r"eos_id must be None or an int in \[0, vocab_size\) = \[0, 97\)"),
        (dict(generator=0), TypeError, "generator must be a torch.Generator"),
        (dict(ids=torch.zeros(1, 4)), TypeError, "ids must have dtype torch.long .*got torch.float32"),
        (dict(ids=torch.zeros(4, dtype=torch.long)), ValueError, r"ids must have shape \(batch, seq\)"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, error, message):
    model = make_model()
    args = dict(ids=torch.zeros(1, 4, dtype=torch.long), max_new_tokens=5)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        generate(model, **args)
    with pytest.raises(error, match=message):  # the stream checks before the first token, not lazily later
        next(stream_generate(model, **args))


# ---- the fast paths -------------------------------------------------------------------------------------
def test_decode_attention_equals_repeating_kv_heads():
    b, k, r, s, d = 2, 2, 4, 9, 16
    q, keys, values = torch.randn(b, k * r, 1, d), torch.randn(b, k, s, d), torch.randn(b, k, s, d)
    visible = (torch.arange(s) <= 5)[None, None, None, :]
    expected = torch.nn.functional.scaled_dot_product_attention(
        q, repeat(keys, "b k s d -> b (k r) s d", r=r), repeat(values, "b k s d -> b (k r) s d", r=r),
        attn_mask=visible)
    assert rel_err(decode_attention(q, keys, values, mask=visible), expected) <= 1e-6


@pytest.mark.parametrize("layout", ["mha", "gqa8"])
def test_static_step_equals_the_readable_cached_forward(layout):
    model = make_model(layout)
    ids = torch.randint(0, 97, (2, 12))
    with torch.no_grad():
        readable = model.new_kv_cache(2, 20)
        static = model.new_kv_cache(2, 20)
        model(ids[:, :5], readable)
        model(ids[:, :5], static)
        for p in range(5, 12):
            expected = model(ids[:, p : p + 1], readable, last_only=True)[:, -1]
            got = static_decode_step(model, static, ids[:, p : p + 1], torch.tensor([p]))
            assert rel_err(got, expected) <= 1e-5
        for i in range(model.config.n_layers):  # and it wrote the same keys and values
            assert rel_err(static.keys[i][:, :, :12], readable.keys[i][:, :, :12]) <= 1e-6


def test_static_decoder_generates_what_generate_does():
    model = make_model()
    ids = torch.randint(0, 97, (1, 6))
    decoder = StaticDecoder(model, batch=1, max_len=40)
    assert torch.equal(decoder.generate(ids, 20), generate(model, ids, 20))
    assert torch.equal(decoder.generate(ids[:, :3], 30), generate(model, ids[:, :3], 30))  # reusable
    with pytest.raises(ValueError, match="must fit the cache"):
        decoder.generate(ids, 35)
    with pytest.raises(ValueError, match="capture must be one of"):
        StaticDecoder(model, capture="cudagraphs")
    with pytest.raises(ValueError, match="needs a CUDA model"):
        StaticDecoder(model, capture="graph")


def test_compiled_cpu_step_freezes_the_weights_and_decoder_refuses_stale_ones():
    """The CPU fast path (Inductor freezing + its GEMM template) decodes what generate does, and really does
    hold its own copy of the weights: an in-place edit is invisible to it, so StaticDecoder must refuse."""
    model = make_model()
    ids = torch.randint(0, 97, (1, 6))
    decoder = StaticDecoder(model, batch=1, max_len=40, capture="compile")
    assert decoder.frozen
    expected = generate(model, ids, 20)
    assert torch.equal(decoder.generate(ids, 20), expected)
    token, pos = expected[:, 6:7], torch.tensor([6])
    with torch.inference_mode():
        before = decoder.step(token, pos).clone()
        with torch.no_grad():
            model.lm_head.weight.mul_(-1.0)  # every logit changes sign in the readable model
        after = decoder.step(token, pos)
    assert torch.equal(before, after)  # frozen: the compiled step still uses the old weights
    with pytest.raises(RuntimeError, match="weights changed after this decoder compiled"):
        decoder.generate(ids, 5)
    assert not StaticDecoder(model, batch=1, max_len=40).frozen  # the eager static step reads the live weights


# ---- fused projections: one GEMV for q/k/v and one for gate/up, on the same storage --------------------
def fused_copy(layout="gqa8"):
    """(plain, fused): two identical models, the second fused; neither shares anything with the other."""
    plain = make_model(layout)
    fused = make_model(layout)
    fused.load_state_dict(plain.state_dict())
    return plain, fuse_projections(fused)


def storage_range(t):
    return t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()


@pytest.mark.parametrize("layout", ["mha", "gqa8"])
def test_fused_static_step_equals_the_readable_cached_forward(layout):
    plain, model = fused_copy(layout)
    assert is_fused(model) and not is_fused(plain)
    ids = torch.randint(0, 97, (2, 12))
    with torch.no_grad():
        readable, static = plain.new_kv_cache(2, 20), model.new_kv_cache(2, 20)
        plain(ids[:, :5], readable)
        model(ids[:, :5], static)
        for p in range(5, 12):
            expected = plain(ids[:, p : p + 1], readable, last_only=True)[:, -1]
            got = static_decode_step(model, static, ids[:, p : p + 1], torch.tensor([p]), fused=True)
            assert rel_err(got, expected) <= 1e-5
        for i in range(model.config.n_layers):
            assert rel_err(static.keys[i][:, :, :12], readable.keys[i][:, :, :12]) <= 1e-6
            assert rel_err(static.values[i][:, :, :12], readable.values[i][:, :, :12]) <= 1e-6


def test_fusing_keeps_parameters_and_shares_their_storage():
    plain, model = fused_copy()
    before = {name: id(p) for name, p in model.named_parameters()}
    refused = fuse_projections(model)  # idempotent: nothing is copied again
    assert refused is model and {name: id(p) for name, p in model.named_parameters()} == before
    shapes = lambda m: [(k, v.shape) for k, v in m.state_dict().items()]  # noqa: E731
    assert shapes(model) == shapes(plain)
    assert model.num_parameters() == plain.num_parameters()
    assert [name for name, _ in model.named_buffers()] == [name for name, _ in plain.named_buffers()]
    for layer, plain_layer in zip(model.layers, plain.layers):
        attn, mlp = layer.self_attn, layer.mlp
        groups = [(layer._fused_qkv, [attn.q_proj, attn.k_proj, attn.v_proj]),
                  (layer._fused_gate_up, [mlp.gate_proj, mlp.up_proj])]
        for fused, linears in groups:
            assert fused.shape == (sum(lin.out_features for lin in linears), model.config.d_model)
            lo, hi = storage_range(fused)
            for linear in linears:
                a, b = storage_range(linear.weight)
                assert lo <= a and b <= hi  # inside the fused matrix: no second copy
        assert torch.equal(layer._fused_qkv, torch.cat([plain_layer.self_attn.q_proj.weight,
                                                        plain_layer.self_attn.k_proj.weight,
                                                        plain_layer.self_attn.v_proj.weight]))
        assert torch.equal(layer._fused_gate_up, torch.cat([plain_layer.mlp.gate_proj.weight,
                                                            plain_layer.mlp.up_proj.weight]))
    with torch.no_grad():  # writing a parameter writes the fused matrix: one storage, not a synchronised copy
        model.layers[0].self_attn.k_proj.weight[0, 0] = 7.0
    d_q = model.config.n_heads * model.config.head_dim
    assert model.layers[0]._fused_qkv[d_q, 0] == 7.0


def test_readable_model_and_generate_unchanged_after_fusing():
    plain, model = fused_copy()
    ids = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        assert torch.equal(model(ids), plain(ids))  # same numbers, same kernels: bit for bit
    assert torch.equal(generate(model, ids, 10), generate(plain, ids, 10))
    plain(ids).logsumexp(-1).mean().backward()  # and it still trains: the same gradients, on the same params
    model(ids).logsumexp(-1).mean().backward()
    for (name, p), (_, q) in zip(model.named_parameters(), plain.named_parameters()):
        assert not p.is_inference() and torch.equal(p.grad, q.grad), name


def test_static_decoder_fused_generates_what_generate_does():
    plain, model = fused_copy()
    unfuse_projections(model)
    ids = torch.randint(0, 97, (1, 6))
    assert not StaticDecoder(model, batch=1, max_len=40).fuse and not is_fused(model)  # CPU default: not fused
    with torch.inference_mode():
        decoder = StaticDecoder(model, batch=1, max_len=40, fuse=True)  # fuses under inference_mode too
    assert decoder.fuse and is_fused(model)
    assert not any(p.is_inference() for p in model.parameters())
    assert torch.equal(decoder.generate(ids, 20), generate(plain, ids, 20))
    unfused = StaticDecoder(model, batch=1, max_len=40, fuse=False)  # fuse=False ignores the fused matrices
    assert torch.equal(unfused.generate(ids, 20), generate(plain, ids, 20))
    model.to(torch.float64)  # new storage for every parameter: the fused matrices are stale now
    assert not is_fused(model)
    with pytest.raises(RuntimeError, match="no longer views of the fused"):
        decoder.generate(ids, 5)
    with pytest.raises(ValueError, match="fuse must be None"):
        StaticDecoder(model, fuse="yes")


def test_unfuse_gives_every_weight_its_own_storage_back():
    plain, model = fused_copy()
    unfuse_projections(model)
    assert not hasattr(model.layers[0], "_fused_qkv") and not is_fused(model)
    q, k = model.layers[0].self_attn.q_proj.weight, model.layers[0].self_attn.k_proj.weight
    assert q.untyped_storage().data_ptr() != k.untyped_storage().data_ptr()
    ids = torch.randint(0, 97, (1, 5))
    with torch.no_grad():
        assert torch.equal(model(ids), plain(ids))
