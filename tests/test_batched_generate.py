"""Prompts of different lengths served as one batch: left padding, per-row positions, a padding mask.

The contract: each prompt in a ragged batch gets what it would get alone (the same logits, to float
round-off; greedy: the same tokens), and what transformers' batched `generate` with left padding gives.
"""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from minids import DeepSeekLM
from minids.generate import generate, pad_prompts
from minids.model import padding_mask
from minids.attention import decode_attention, grouped_einsum_decode
from minids.static_cache import StaticDecoder

from conftest import LAYOUTS, rel_err, tiny_config


def make_model(layout="gqa8"):
    return DeepSeekLM(tiny_config(*LAYOUTS[layout], init_std=0.05)).eval()


def ragged_prompts(lengths, vocab=97, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=g) for n in lengths]


def test_pad_prompts_left_pads_and_counts():
    prompts = ragged_prompts([3, 5, 1])
    ids, pad = pad_prompts(prompts, pad_id=7)
    assert ids.shape == (3, 5) and pad.tolist() == [2, 0, 4]
    assert ids[0, :2].tolist() == [7, 7] and torch.equal(ids[0, 2:], prompts[0])
    assert torch.equal(ids[2, 4:], prompts[2])


def test_padding_mask_hides_padding_and_future():
    mask = padding_mask(torch.tensor([2, 0]), start=0, t=4)[:, 0]  # (b, t, s)
    # row 0: slots 0, 1 are padding; a real query sees real keys up to itself, a padding query only itself
    assert mask[0].int().tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]
    assert torch.equal(mask[1], torch.ones(4, 4).tril().bool())  # no padding: the causal mask


@pytest.mark.parametrize("impl", ["sdpa", "einsum"])
@pytest.mark.parametrize("layout", ["mha", "gqa8"])
def test_padded_rows_give_the_logits_of_their_prompt_alone(impl, layout):
    model = make_model(layout)
    model.attn_impl = impl
    prompts = ragged_prompts([6, 9, 2])
    ids, pad = pad_prompts(prompts)
    with torch.no_grad():
        batched = model(ids, pad=pad)
        for row, p in enumerate(prompts):
            alone = model(p[None])
            assert rel_err(batched[row, pad[row]:], alone[0]) < 1e-5, (impl, layout, row)


def test_padded_prefill_then_cached_decode_equals_alone():
    model = make_model()
    prompts = ragged_prompts([4, 7])
    ids, pad = pad_prompts(prompts)
    nxt = torch.randint(0, 97, (2, 3))
    with torch.no_grad():
        cache = model.new_kv_cache(2, max_len=10)
        model(ids, cache, pad=pad)
        steps = [model(nxt[:, i:i + 1], cache) for i in range(3)]  # the cache remembers the padding
        for row, p in enumerate(prompts):
            alone = model(torch.cat([p, nxt[row]])[None])[0, -3:]
            got = torch.cat([s[row] for s in steps])
            assert rel_err(got, alone) < 1e-5


@pytest.mark.parametrize("layout", ["mha", "gqa8"])
def test_ragged_greedy_equals_one_at_a_time(layout):
    model = make_model(layout)
    prompts = ragged_prompts([5, 1, 8, 3])
    out = generate(model, prompts, max_new_tokens=10)
    assert isinstance(out, list) and len(out) == 4
    for p, o in zip(prompts, out):
        assert torch.equal(o, generate(model, p[None], 10)[0])


def test_ragged_eos_stops_each_row_at_its_own_eos():
    model = make_model()
    prompts = ragged_prompts([4, 6], seed=1)
    alone = [generate(model, p[None], 12)[0] for p in prompts]
    eos = int(alone[0][4 + 2])  # row 0 produces it by its third new token at the latest
    out = generate(model, prompts, 12, eos_id=eos)
    for p, a, o in zip(prompts, alone, out):
        new = a[p.numel():]
        hits = (new == eos).nonzero()
        end = int(hits[0]) + 1 if len(hits) else len(new)
        assert torch.equal(o, a[: p.numel() + end])  # its own tokens, up to and including its first eos


def test_ragged_sampling_is_reproducible():
    model = make_model()
    prompts = ragged_prompts([3, 7])
    kw = dict(max_new_tokens=12, temperature=1.2, top_p=0.9)
    a = generate(model, prompts, generator=torch.Generator().manual_seed(5), **kw)
    b = generate(model, prompts, generator=torch.Generator().manual_seed(5), **kw)
    c = generate(model, prompts, generator=torch.Generator().manual_seed(6), **kw)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_ragged_greedy_equals_transformers_with_left_padding():
    cfg = tiny_config(8, 2, init_std=0.05)
    ref = LlamaForCausalLM(LlamaConfig(**cfg.to_hf_dict())).eval()
    ref.generation_config.eos_token_id = None
    model = DeepSeekLM.from_hf(ref)
    prompts = ragged_prompts([3, 8, 5], vocab=cfg.vocab_size)
    ids, pad = pad_prompts(prompts)
    attention_mask = (torch.arange(ids.shape[1])[None, :] >= pad[:, None]).long()
    expected = ref.generate(ids, attention_mask=attention_mask, max_new_tokens=16, do_sample=False, pad_token_id=0)
    for row, o in enumerate(generate(model, prompts, 16)):
        assert torch.equal(o, expected[row, int(pad[row]):])


def test_static_decoder_serves_a_ragged_batch():
    model = make_model()
    prompts = ragged_prompts([2, 6, 4])
    decoder = StaticDecoder(model, batch=3, max_len=24)
    for got, want in zip(decoder.generate(prompts, 14), generate(model, prompts, 14)):
        assert torch.equal(got, want)
    same = ragged_prompts([5, 5, 5])  # and a plain batch afterwards: no padding left behind
    assert torch.equal(decoder.generate(torch.stack(same), 8), generate(model, torch.stack(same), 8))


@pytest.mark.parametrize("prompts, message", [
    ([], "non-empty list"),
    ([torch.tensor([1, 2]), torch.tensor([], dtype=torch.long)], "prompt 1 must be a non-empty 1-D"),
    ([torch.tensor([[1, 2]])], "prompt 0 must be a non-empty 1-D"),
    ([torch.tensor([1.0, 2.0])], "torch.long"),
])
def test_bad_prompt_lists_raise_clear_errors(prompts, message):
    with pytest.raises(ValueError, match=message):
        generate(make_model(), prompts, 4)


def test_bad_pad_raises_clear_errors():
    model = make_model()
    ids = torch.randint(0, 97, (2, 5))
    with pytest.raises(ValueError, match="shape \\(batch,\\)"):
        model(ids, pad=torch.tensor([1]))
    with pytest.raises(ValueError, match="every row keeps at least one real token"):
        model(ids, pad=torch.tensor([0, 5]))
    cache = model.new_kv_cache(2, 8)
    model(ids, cache)
    with pytest.raises(ValueError, match="goes with the first chunk"):
        model(ids[:, :1], cache, pad=torch.tensor([0, 1]))


@pytest.mark.parametrize("n_kv", [8, 2, 1])
def test_grouped_einsum_decode_equals_the_fused_kernel(n_kv):
    q = torch.randn(3, 8, 1, 16)
    k, v = torch.randn(3, n_kv, 11, 16), torch.randn(3, n_kv, 11, 16)
    mask = torch.rand(3, 1, 1, 11) > 0.3
    mask[..., 0] = True  # every row sees at least one key
    for m in (None, mask):
        assert rel_err(grouped_einsum_decode(q, k, v, m), decode_attention(q, k, v, m)) < 1e-6


def test_static_decoder_with_einsum_attention_generates_the_same():
    model = make_model()
    prompts = ragged_prompts([3, 7])
    decoder = StaticDecoder(model, batch=2, max_len=20, attn="einsum")
    for got, want in zip(decoder.generate(prompts, 10), generate(model, prompts, 10)):
        assert torch.equal(got, want)
    with pytest.raises(ValueError, match="attn must be one of"):
        StaticDecoder(model, attn="flash")
