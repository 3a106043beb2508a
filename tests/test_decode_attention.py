"""The split-KV decode kernels compute the same function as the readable grouped einsum.

Ragged left-padded rows (each row sees its own slots start[b] <= s < end[b]), MHA / GQA / MQA, short and long
contexts. On a CPU FlexAttention runs its eager reference with the block mask minids builds, and the Triton
kernel runs in Triton's interpreter (in a subprocess, where TRITON_INTERPRET is set before Triton loads; skipped
where Triton is not installed). benchmarks/bench_batched_decode.py checks the compiled kernels on the GPU again.
"""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from minids import DeepSeekLM, ModelConfig
from minids.decode_attention import (
    DECODE_KERNELS, FLEX_AVAILABLE, VisibleKeys, decode, flex_block_mask, flex_decode, flex_decode_blocks,
    num_splits, reference_decode, runs_as, visible_keys)
from minids.kv_cache import KVCache
from minids.static_cache import static_decode_step

SHAPES = [(8, 8, 37), (8, 2, 37), (8, 1, 37), (8, 8, 700), (8, 2, 700), (8, 1, 700)]  # (h, k, max_len)
IDS = ["MHA-short", "GQA-short", "MQA-short", "MHA-long", "GQA-long", "MQA-long"]


def ragged(h, kv_heads, max_len, batch=3, d=16, seed=0):
    """Random q, k, v and per-row visible slots: left padding of 0 .. max_len / 2, ends short of max_len."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, h, 1, d, generator=g)
    k, v = (torch.randn(batch, kv_heads, max_len, d, generator=g) for _ in range(2))
    start = torch.randint(0, max_len // 2, (batch,), generator=g)
    start[0] = 0  # one row without padding
    end = max_len - torch.randint(0, max_len // 4, (batch,), generator=g)
    end[0] = max_len  # one row that fills the cache
    return q, k, v, start, end


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_reference_sees_exactly_the_rows_slots():
    """The reference itself: changing a key outside a row's slots changes nothing, inside it does."""
    q, k, v, start, end = ragged(8, 2, 37)
    out = reference_decode(q, k, v, start, end)
    hidden, seen = k.clone(), k.clone()
    hidden[1, :, start[1] - 1] += 5.0  # a padding slot of row 1
    seen[1, :, start[1]] += 5.0  # its first real slot
    assert torch.equal(reference_decode(q, hidden, v, start, end), out)
    assert not torch.allclose(reference_decode(q, seen, v, start, end)[1], out[1])


@pytest.mark.skipif(not FLEX_AVAILABLE, reason="FlexAttention needs torch >= 2.5")
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_flex_decode_equals_einsum(shape):
    q, k, v, start, end = ragged(*shape)
    keys = VisibleKeys("flex", start, end, k.shape[2], None, *flex_decode_blocks(start, end, k.shape[2]))
    assert rel_err(flex_decode(q, k, v, keys), reference_decode(q, k, v, start, end)) < 1e-5


@pytest.mark.skipif(not FLEX_AVAILABLE, reason="FlexAttention needs torch >= 2.5")
def test_flex_block_mask_lists_only_blocks_with_visible_keys():
    """Every block holding a visible key is listed, no other, and none is a "full" block."""
    max_len = 700
    start, end = torch.tensor([0, 130, 300, 5]), torch.tensor([700, 256, 700, 6])
    num, idx = flex_decode_blocks(start, end, max_len)
    mask = flex_block_mask(VisibleKeys("flex", start, end, max_len, kv_num_blocks=num, kv_indices=idx))
    assert mask.full_kv_num_blocks is None
    dense = mask.to_dense()[:, 0, 0]  # (b, n_blocks): 1 where a block is computed
    slots = torch.arange(6 * 128)
    visible = (slots >= start[:, None]) & (slots < end[:, None])
    want = visible.reshape(4, 6, 128).any(-1).int()
    assert torch.equal(dense, want), (dense, want)
    assert num.flatten().tolist() == [6, 1, 4, 1]


@pytest.mark.skipif(subprocess.run([sys.executable, "-c", "import triton"], capture_output=True).returncode != 0,
                    reason="Triton is not installed")
def test_triton_split_kv_equals_einsum_in_the_interpreter():
    script = textwrap.dedent("""
        import torch
        import triton.runtime.interpreter as interp
        # Triton 3.6's interpreter turns a loaded scalar into a 1-element array, which numpy >= 2.3 refuses to
        # use as an index (the loop bound of a split); give it the element instead.
        _orig = interp._patch_lang_tensor
        def _patched(tensor, scope):
            _orig(tensor, scope)
            scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))
        interp._patch_lang_tensor = _patched
        from minids.decode_attention import split_kv_decode, reference_decode
        from tests.test_decode_attention import SHAPES, ragged, rel_err
        for shape in SHAPES:
            q, k, v, start, end = ragged(*shape)
            want = reference_decode(q, k, v, start, end)
            for splits in (1, 3):  # one split; three, of which short rows leave some empty
                err = rel_err(split_kv_decode(q, k, v, start, end, splits=splits), want)
                assert err < 1e-5, (shape, splits, err)
        print("ok")
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=root,
                         timeout=600)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-3000:]


def test_num_splits_fills_the_card_and_no_split_is_shorter_than_a_tile():
    assert num_splits(1, 4, 2048, sms=132) == 32  # 2048 keys / 64 per tile: the tile count caps it
    assert num_splits(1, 8, 8192, sms=132) == 33  # about two blocks per SM: 8 x 33 = 264
    assert num_splits(64, 8, 4096, sms=132) == 1  # 512 blocks already: no split
    assert num_splits(1, 1, 10, sms=132) == 1


def test_on_a_cpu_the_fast_kernels_run_the_einsum_and_bad_names_are_refused():
    cpu = torch.device("cpu")
    assert [runs_as(k, cpu) for k in DECODE_KERNELS] == ["sdpa", "einsum", "einsum", "einsum"]
    q, k, v, start, end = ragged(8, 2, 37)
    for kernel in DECODE_KERNELS:
        out = decode(q, k, v, visible_keys(kernel, start, end, 37))
        assert rel_err(out, reference_decode(q, k, v, start, end)) < 1e-5, kernel
    with pytest.raises(ValueError, match="one of"):
        runs_as("flash", cpu)


@pytest.mark.parametrize("kernel", ["flex", "triton"])
def test_static_step_with_each_kernel_gives_the_readable_logits(kernel):
    """The whole static step (left-padded rows, GQA) against the readable model's forward on the same cache."""
    torch.manual_seed(0)
    cfg = ModelConfig.preset("tiny").replace(n_kv_heads=2)
    model = DeepSeekLM(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (2, 9))
    pad = torch.tensor([0, 4])
    with torch.no_grad():
        readable, static = KVCache(cfg, 2, 16), KVCache(cfg, 2, 16)
        model(ids[:, :8], readable, pad=pad)
        model(ids[:, :8], static, pad=pad)
        want = model(ids[:, 8:], readable, last_only=True)[:, -1]
        got = static_decode_step(model, static, ids[:, 8:], torch.tensor([8]), pad=pad, attn=kernel)
    assert rel_err(got, want) < 1e-5


def test_compiled_layers_give_the_readable_logits_with_one_compilation_for_all_layers():
    """compile_layers=True: the pieces between attentions, compiled by Inductor with the cache writes inside,
    compute the readable step's logits and write the same cache; each piece compiles once for every layer."""
    from torch._dynamo.utils import counters

    from minids.static_cache import compiled_pieces

    torch.manual_seed(0)
    cfg = ModelConfig.preset("tiny").replace(n_kv_heads=2, n_layers=3)
    model = DeepSeekLM(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (2, 10))
    pad = torch.tensor([0, 3])
    torch._dynamo.reset()
    compiled_pieces.cache_clear()
    counters.clear()
    with torch.no_grad():
        readable, static = KVCache(cfg, 2, 16), KVCache(cfg, 2, 16)
        model(ids[:, :8], readable, pad=pad)
        model(ids[:, :8], static, pad=pad)
        for p in (8, 9):  # two steps: the second reuses the compiled code
            want = model(ids[:, p : p + 1], readable, last_only=True)[:, -1]
            got = static_decode_step(model, static, ids[:, p : p + 1], torch.tensor([p]), pad=pad,
                                     attn="triton", compile_layers=True)
            assert rel_err(got, want) < 1e-4, p
    for i in range(cfg.n_layers):  # the compiled layer_in wrote this token's keys and values in place
        assert rel_err(static.keys[i][:, :, 8:10], readable.keys[i][:, :, 8:10]) < 1e-5
        assert rel_err(static.values[i][:, :, 8:10], readable.values[i][:, :, 8:10]) < 1e-5
    assert counters["stats"]["unique_graphs"] == 3  # layer_in, between_attentions, last_layer_out
