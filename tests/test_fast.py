"""The fast paths compute the same function as the readable model.

Compilation is checked with the "aot_eager" backend: it runs the same capture (Dynamo), functionalisation
and autograd split (AOTAutograd) that Inductor compiles from, in seconds instead of minutes on a CPU. The
Inductor kernels themselves are exercised by the GPU benchmarks, which check the logits against the eager
model before timing (benchmarks/bench_prefill.py).
"""

import copy

import pytest
import torch

from minids import DeepSeekLM
from minids.fast import (
    compile_model, compiled_loss, fused_adamw, is_compiled, make_train_step, next_token_loss, sdpa_backend,
    uncompile_model,
)

from conftest import rel_err, tiny_config


def test_compiled_model_matches_readable_forward():
    model = DeepSeekLM(tiny_config(n_heads=8, n_kv_heads=2)).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 12))
    with torch.no_grad():
        ref = model(ids)
        compile_model(model, backend="aot_eager")
        assert is_compiled(model)
        names_before = set(DeepSeekLM(model.config, device="meta").state_dict())
        assert set(model.state_dict()) == names_before  # compiled in place: checkpoint names unchanged
        out = model(ids)
        uncompile_model(model)
        assert not is_compiled(model)
    assert rel_err(out, ref) < 1e-6


def test_compiled_train_step_matches_readable_step():
    torch.manual_seed(0)
    eager = DeepSeekLM(tiny_config(n_heads=4, n_kv_heads=2, n_layers=2))
    fast = copy.deepcopy(eager)
    initial_head = eager.lm_head.weight.detach().clone()
    ids = torch.randint(0, eager.config.vocab_size, (2, 10))
    targets = torch.roll(ids, -1, dims=1)
    # float32 here (autocast_dtype=None) so that the two paths agree to rounding, not to bf16 noise.
    step_ref = make_train_step(eager, fused_adamw(eager.parameters(), lr=1e-2), autocast_dtype=None, clip_norm=1.0)
    compile_model(fast, backend="aot_eager")
    step_fast = make_train_step(fast, fused_adamw(fast.parameters(), lr=1e-2), autocast_dtype=None,
                                loss_fn=compiled_loss(backend="aot_eager"), clip_norm=1.0)
    for _ in range(2):
        ref, out = step_ref(ids, targets).item(), step_fast(ids, targets).item()
        assert abs(out - ref) < 1e-5 * abs(ref)
    for (name, p_ref), (_, p_fast) in zip(eager.named_parameters(), fast.named_parameters()):
        assert rel_err(p_fast.detach(), p_ref.detach()) < 1e-5, name
    assert rel_err(eager.lm_head.weight.detach(), initial_head) > 1e-3  # the steps really moved the weights


def test_next_token_loss_is_mean_negative_log_likelihood():
    logits = torch.randn(2, 3, 7, dtype=torch.bfloat16)
    targets = torch.randint(0, 7, (2, 3))
    log_p = logits.double().log_softmax(-1)
    expected = -log_p.gather(-1, targets[..., None]).mean()
    assert abs(next_token_loss(logits, targets).item() - expected.item()) < 1e-5


def test_sdpa_backend_math_matches_default_and_rejects_unknown_names():
    model = DeepSeekLM(tiny_config()).eval()
    ids = torch.randint(0, model.config.vocab_size, (1, 9))
    with torch.no_grad():
        ref = model(ids)
        with sdpa_backend("math"):
            out = model(ids)
    assert rel_err(out, ref) < 1e-5
    with pytest.raises(ValueError, match="not one of"):
        with sdpa_backend("flash3"):
            pass


def test_fused_adamw_uses_the_paper_hyperparameters():
    opt = fused_adamw([torch.nn.Parameter(torch.zeros(3))])
    group = opt.param_groups[0]
    assert group["betas"] == (0.9, 0.95) and group["weight_decay"] == 0.1
    assert not group.get("fused")  # fused kernels only on CUDA; the CPU keeps the default implementation


def test_compile_model_rejects_other_modules():
    with pytest.raises(TypeError, match="DeepSeekLM"):
        compile_model(torch.nn.Linear(2, 2))
