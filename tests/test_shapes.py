"""The shape builder: parameter-matched families, checked against the model's own parameter count."""

import pytest

from minids import DeepSeekLM, ModelConfig, count_params
from minids.shapes import budget_of, heads_for, param_matched_family, shape_for, solve_d_ff


def test_the_67b_budget_at_its_width_gives_back_its_ffn():
    # DeepSeek LLM 67B: 95 layers of d_model 8192, GQA 64/8. Its own budget, asked for 95 layers, must return
    # d_ff = 22016; asked for 80 layers (Llama-2-70B's depth) it must return a wider FFN, as in FACTS 2.
    ds = ModelConfig.preset("deepseek-llm-67b")
    budget = count_params(ds).non_embedding
    assert solve_d_ff(budget, 8192, 95, 64, 8, multiple_of=256) == 22016
    wide = solve_d_ff(budget, 8192, 80, 64, 8, multiple_of=256)
    assert 22016 < wide < 28672  # Llama-2-70B's 28672 spends 2.7B more parameters (68.45B vs 65.75B)


@pytest.mark.parametrize("d_model, layers, widths, head_dim, kv_ratio", [
    (256, (2, 4, 8, 16), (192, 384), 32, 2),
    (64, None, (128,), 16, 2),
    (512, (3, 6, 12, 24), (), 64, 4),
])
def test_every_member_is_within_3_percent_of_the_budget(d_model, layers, widths, head_dim, kv_ratio):
    budget = budget_of(d_model, 8, 8 * d_model // 3 // 8 * 8, head_dim, kv_ratio)
    family = param_matched_family(budget, d_model, layers, widths, head_dim=head_dim, kv_ratio=kv_ratio)
    assert len(family) >= 3
    for shape in family:
        model = DeepSeekLM(shape.config, device="meta")  # the model's own count, not the formula's
        embedding = 2 * shape.config.vocab_size * shape.config.d_model  # embed_tokens + untied lm_head
        actual = model.num_parameters() - embedding
        assert abs(actual / budget - 1) <= 0.03, shape.name
        assert shape.config.head_dim == head_dim and shape.config.n_rep == kv_ratio
    depths = [s.config.n_layers for s in family]
    assert depths == sorted(depths)
    along_ffn = [s for s in family if s.axis == "d_ff"]
    # Along the d_ff axis, deeper means a narrower FFN (DeepSeek's trade).
    assert [s.config.d_ff for s in along_ffn] == sorted((s.config.d_ff for s in along_ffn), reverse=True)
    assert all(s.config.d_model == d_model for s in along_ffn)


def test_default_depths_double_until_the_ffn_runs_out():
    budget = budget_of(64, 4, 176, 16, 2)
    family = param_matched_family(budget, 64, head_dim=16, kv_ratio=2)
    assert [s.config.n_layers for s in family] == [1, 2, 4, 8]  # 16 layers of attention alone exceed it


def test_d_model_axis_keeps_the_usual_ffn_ratio():
    budget = budget_of(256, 8, 688, 32, 2)
    (thin,) = [s for s in param_matched_family(budget, 256, (8,), (192,), head_dim=32, kv_ratio=2)
               if s.axis == "d_model"]
    assert thin.config.d_model == 192 and thin.config.n_layers > 8
    assert 2.0 < thin.config.d_ff / thin.config.d_model < 3.3


def test_errors_name_the_problem():
    budget = budget_of(64, 4, 176, 16, 2)
    with pytest.raises(ValueError, match="16 layers of d_model 64 do not fit a budget of 184,896"):
        shape_for(budget, 64, 16, head_dim=16, kv_ratio=2)
    with pytest.raises(ValueError, match=r"L4 d32 ff24 .* -6.1% off the budget"):
        shape_for(budget_of(32, 2, 88, 16, 2), 32, 4, head_dim=16, kv_ratio=2, multiple_of=8)
    with pytest.raises(ValueError, match=r"d_model \(100\) must be a multiple of head_dim \(16\)"):
        heads_for(100, 16, 1)
    with pytest.raises(ValueError, match="must be a multiple of kv_ratio"):
        heads_for(48, 16, 2)


def test_pregenerated_batches_are_the_stream_train_would_draw():
    import torch

    from minids.data import KHopTask
    from minids.experiments.depth_vs_width import pregenerated

    get_batch = KHopTask(max_hops=3).batches(4)
    fast = pregenerated(get_batch, 3, seed=5, device="cpu")
    generator = torch.Generator().manual_seed(5)  # train() seeds its generator with TrainConfig.seed
    for step in range(3):
        x, y = get_batch(step, generator)
        fx, fy = fast(step, None)
        assert torch.equal(x, fx) and torch.equal(y, fy)


def test_steps_follow_each_tasks_share_of_the_budget():
    from dataclasses import replace

    from minids.experiments.depth_vs_width import SETTINGS, choose_steps

    setting = replace(SETTINGS["cuda"], tasks=("khop", "corpus"), task_share={"khop": 0.75, "corpus": 0.25},
                      budget_s=100.0, min_steps=1, max_steps=10**6)
    per_step = {("A", "khop"): 0.01, ("B", "khop"): 0.01, ("A", "corpus"): 0.01, ("B", "corpus"): 0.01}
    khop, corpus = (choose_steps(setting, per_step, 1, t, eval_overhead=1.0) for t in ("khop", "corpus"))
    assert (khop, corpus) == (3750, 1250)  # 75 s / 0.02 s and 25 s / 0.02 s
