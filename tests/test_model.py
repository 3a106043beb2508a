import pytest
import torch

from minids import DeepSeekLM, ModelConfig

from conftest import LAYOUTS, rel_err, tiny_config


def test_builds_the_67b_on_meta_without_memory():
    model = DeepSeekLM(ModelConfig.preset("deepseek-llm-67b"), device="meta")
    assert len(model.layers) == 95
    assert all(p.is_meta for p in model.parameters())


def test_materialize_in_target_dtype_and_paper_init():
    cfg = tiny_config(d_ff=512)
    model = DeepSeekLM(cfg, device="meta").materialize("cpu", dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    w = model.layers[0].mlp.gate_proj.weight.float()
    assert abs(w.std().item() - 0.006) < 0.0005 and abs(w.mean().item()) < 0.0005
    assert torch.equal(model.norm.weight, torch.ones_like(model.norm.weight))


def test_same_seed_same_weights():
    cfg = tiny_config()
    torch.manual_seed(3)
    a = DeepSeekLM(cfg)
    torch.manual_seed(3)
    b = DeepSeekLM(cfg)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_einsum_and_sdpa_paths_agree(layout):
    model = DeepSeekLM(tiny_config(*LAYOUTS[layout], init_std=0.05)).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 23))
    with torch.no_grad():
        fast = model(ids)
        model.attn_impl = "einsum"
        slow = model(ids)
    assert rel_err(slow, fast) <= 1e-5


def test_causality():
    model = DeepSeekLM(tiny_config(init_std=0.05)).eval()
    ids = torch.randint(0, model.config.vocab_size, (1, 30))
    changed = ids.clone()
    changed[0, 17] = (ids[0, 17] + 1) % model.config.vocab_size
    with torch.no_grad():
        a, b = model(ids), model(changed)
    assert torch.equal(a[:, :17], b[:, :17])  # nothing before position 17 may move
    assert not torch.allclose(a[:, 17:], b[:, 17:])


def test_attention_weights_are_causal_distributions():
    model = DeepSeekLM(tiny_config(8, 2, init_std=0.05)).eval()
    maps = model.attention_weights(torch.randint(0, 97, (2, 9)))
    assert len(maps) == 2 and maps[0].shape == (2, 8, 9, 9)
    assert torch.allclose(maps[0].sum(-1), torch.ones(2, 8, 9))
    assert torch.all(maps[1].triu(diagonal=1) == 0)


def test_last_only_is_the_last_row():
    model = DeepSeekLM(tiny_config()).eval()
    ids = torch.randint(0, 97, (2, 12))
    with torch.no_grad():
        assert rel_err(model(ids, last_only=True), model(ids)[:, -1:]) <= 1e-6


def test_backward_reaches_every_parameter():
    model = DeepSeekLM(tiny_config())
    ids = torch.randint(0, 97, (2, 12))
    logits = model(ids[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_bf16_forward_runs_and_stays_close():
    model = DeepSeekLM(tiny_config(init_std=0.05)).eval()
    ids = torch.randint(0, 97, (2, 12))
    with torch.no_grad():
        full = model(ids)
        half = model.to(torch.bfloat16)(ids)
    assert half.dtype == torch.bfloat16
    assert rel_err(half.float(), full) < 2e-2
