import itertools
import os
import random
import subprocess
import sys

import pytest
import torch

from minids import DeepSeekLM, ModelConfig, count_params, matmul_flops_per_token
from minids.pipeline import (
    StageModule, bubble_fraction, build_stage, check_ranges, efficiency, head_cost, in_layer_units, init_by_name,
    layer_cost, min_max_partition, module_costs, naive_partition, partition, simulate, stage_costs,
)
from minids.pipeline.run import UsageError, check_torch, main, parse_args, plan

from conftest import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIG = ["deepseek-llm-7b", "deepseek-llm-67b", "llama-2-70b", "deepseek-llm-67b-mini"]


# ---- cost model ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", BIG)
def test_costs_add_up_to_the_accounting_formulas(name):
    cfg = ModelConfig.preset(name)
    T = 1024
    embed, layers, head = module_costs(cfg, T)
    assert sum(c.flops for c in layers) + head.flops == matmul_flops_per_token(cfg, T) * T
    assert embed.params + sum(c.params for c in layers) + head.params == count_params(cfg).total


def test_head_in_layer_units_matches_the_references():
    # docs/references.md#pipelines: the 67B's head does 1.68 GFLOP per token against 1.38 per layer (weights only).
    cfg = ModelConfig.preset("deepseek-llm-67b")
    assert head_cost(cfg, 1).flops == pytest.approx(1.68e9, rel=0.01)
    weights_only = layer_cost(cfg, 1).flops - 4 * cfg.n_heads * cfg.head_dim  # one key seen at T = 1
    assert weights_only == pytest.approx(1.38e9, rel=0.01)
    assert 1.1 < in_layer_units(cfg, head_cost(cfg)) < 1.25
    seven = ModelConfig.preset("deepseek-llm-7b")
    assert 1.85 < in_layer_units(seven, head_cost(seven)) < 2.1


def test_stage_parameters_match_the_cost_model():
    cfg = ModelConfig.preset("deepseek-llm-7b")
    ranges = partition(cfg, 4)
    for k, r in enumerate(ranges):
        stage = StageModule(cfg, r, k == 0, k == 3)  # meta device: free
        assert sum(p.numel() for p in stage.parameters()) == stage_costs(cfg, ranges, by="params")[k]


# ---- partition ----------------------------------------------------------------------------------------
def brute_force(weights, n_parts):
    """Every way to cut weights into n_parts non-empty pieces; the lexicographically best (max, sum of squares)."""
    best = None
    for cuts in itertools.combinations(range(1, len(weights)), n_parts - 1):
        bounds = (0, *cuts, len(weights))
        sums = [sum(weights[bounds[i]:bounds[i + 1]]) for i in range(n_parts)]
        key = (max(sums), sum(s * s for s in sums))
        best = key if best is None or key < best else best
    return best


def test_min_max_partition_matches_brute_force():
    rng = random.Random(0)
    for _ in range(150):
        n = rng.randint(1, 9)
        weights = [rng.randint(1, 20) for _ in range(n)]
        k = rng.randint(1, n)
        ranges = min_max_partition(weights, k)
        sums = [sum(weights[i] for i in r) for r in ranges]
        assert (max(sums), sum(s * s for s in sums)) == brute_force(weights, k), (weights, k)


@pytest.mark.parametrize("name", ["deepseek-llm-7b", "deepseek-llm-67b", "deepseek-llm-67b-mini"])
@pytest.mark.parametrize("by", ["flops", "params", "activation_bytes"])
def test_partition_is_contiguous_covering_and_no_worse_than_naive(name, by):
    cfg = ModelConfig.preset(name)
    for p in (1, 2, 3, 4, 5, 8, 16):
        ranges = partition(cfg, p, by=by)
        check_ranges(cfg, ranges)  # raises if not contiguous, ordered, non-empty, covering
        assert [r.start for r in ranges[1:]] == [r.stop for r in ranges[:-1]]
        costs = stage_costs(cfg, ranges, by=by)
        assert sum(costs) == sum(stage_costs(cfg, naive_partition(cfg, p), by=by))
        assert max(costs) <= max(stage_costs(cfg, naive_partition(cfg, p), by=by))


def test_95_layers_plus_head_split_evenly_where_96_divides():
    cfg = ModelConfig.preset("deepseek-llm-67b")
    for p in (2, 3, 4, 6, 8, 12, 16):  # divisors of 96: every stage q = 96/p units, the last q - 1 layers + head
        ranges = partition(cfg, p)
        assert [len(r) for r in ranges] == [96 // p] * (p - 1) + [96 // p - 1]
        assert efficiency(cfg, ranges) > 0.97
    seven = ModelConfig.preset("deepseek-llm-7b")  # 30 layers + a 2-layer head = 32 units
    for p in (2, 4, 8):
        assert efficiency(seven, partition(seven, p)) > 0.99
        assert efficiency(seven, naive_partition(seven, p)) < 0.95  # the naive split loses here


def test_partition_errors():
    cfg = tiny_config(n_layers=3)
    with pytest.raises(ValueError, match="cannot split 3 decoder layer.* into 4 pipeline stages.*between 1 and 3"):
        partition(cfg, 4)
    with pytest.raises(ValueError, match="between 1 and 3"):
        naive_partition(cfg, 0)
    with pytest.raises(ValueError, match="partition by 'time'"):
        partition(cfg, 2, by="time")
    with pytest.raises(ValueError, match="stage 1 has layers range\\(2, 3\\)"):
        stage_costs(cfg, [range(0, 1), range(2, 3)])
    with pytest.raises(ValueError, match="cover layers 0..1, but the model has 3"):
        stage_costs(cfg, [range(0, 1), range(1, 2)])


# ---- schedules ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_simulated_bubble_equals_the_formula(schedule):
    for p, m in [(1, 1), (2, 1), (2, 8), (4, 4), (4, 16), (8, 3)]:
        t = simulate([1.5] * p, m, schedule)
        assert t.bubble_fraction == pytest.approx(bubble_fraction(p, m), abs=1e-12)
        assert t.makespan == pytest.approx((m + p - 1) * 1.5 * 3)
        held = [t.peak_in_flight(k) for k in range(p)]
        assert held == ([m] * p if schedule == "gpipe" else [min(p - k, m) for k in range(p)])


def test_simulator_respects_dependencies_and_slowest_stage():
    t = simulate([1.0, 3.0, 1.0], 6, "1f1b")
    done = {(o.stage, o.kind, o.microbatch): o for o in t.ops}
    for o in t.ops:
        if o.kind == "F" and o.stage > 0:
            assert o.start >= done[(o.stage - 1, "F", o.microbatch)].end
        if o.kind == "B" and o.stage < 2:
            assert o.start >= done[(o.stage + 1, "B", o.microbatch)].end
    assert t.makespan >= 6 * 3.0 * 3  # the slow stage alone is busy m * (f + b)


# ---- stages -------------------------------------------------------------------------------------------
def test_stages_compose_to_the_model_with_the_same_weights():
    cfg = tiny_config(n_layers=5)
    ranges = partition(cfg, 3, seq_len=8)
    ref = DeepSeekLM(cfg, device="meta").materialize("cpu", init=False)
    init_by_name(ref, seed=7)
    ref_params = dict(ref.named_parameters())
    stages = [build_stage(cfg, ranges, k, "cpu", seed=7) for k in range(3)]
    for stage in stages:
        for name, p in stage.named_parameters():
            assert torch.equal(p, ref_params[name]), name
    ids = torch.randint(0, cfg.vocab_size, (2, 8))
    x = ids
    for stage in stages:
        x = stage(x)
    torch.testing.assert_close(x, ref(ids), rtol=0, atol=0)
    other = build_stage(cfg, ranges, 0, "cpu", seed=8)
    assert not torch.equal(other.embed_tokens.weight, stages[0].embed_tokens.weight)


# ---- the command line: errors before any process group ------------------------------------------------
@pytest.mark.parametrize("argv, world, message", [
    (["--preset", "tiny", "--microbatches", "3", "--batch", "4"], 2, "--batch 4 is not divisible by --microbatches 3"),
    (["--preset", "tiny", "--stages", "4"], 2, "--stages 4 but torchrun started 2 processes"),
    (["--preset", "tiny"], 3, "cannot split 2 decoder layer.* into 3 pipeline stages.*torchrun started 3"),
    (["--preset", "tiny", "--schedule", "1f1b", "--microbatches", "1"], 2, "1f1b needs at least as many microbatches"),
    (["--preset", "nope"], 2, "unknown preset 'nope'"),
    (["--preset", "tiny", "--seq-len", "500"], 2, "--seq-len 500 must be between 1 and .* 128"),
    (["--preset", "tiny", "--forward-sweep", "1,x"], 2, "comma-separated integers"),
    (["--preset", "tiny", "--schedule", "dualpipev"], 2, "cannot split 2 decoder layer.* into 4 pipeline stages"),
    (["--preset", "tiny", "--n-layers", "4", "--schedule", "dualpipev", "--microbatches", "2"], 2,
     "needs at least as many microbatches as stages: m = 2 < 4"),
    (["--preset", "tiny", "--n-layers", "4", "--schedule", "zbv", "--chunks", "3"], 2, "exactly 2 stages per rank"),
    (["--preset", "tiny", "--schedule", "1f1b", "--chunks", "2"], 2, "use --schedule interleaved or zb1p"),
    (["--preset", "tiny", "--n-layers", "4", "--schedule", "interleaved", "--forward-sweep", "1,2"], 2,
     "--forward-sweep measures GPipe's forward"),
])
def test_bad_command_lines_fail_before_starting(argv, world, message):
    with pytest.raises(UsageError, match=message):
        plan(parse_args(argv), world, world)


def test_without_torchrun_says_how_to_run(monkeypatch, capsys):
    for var in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert main(["--preset", "tiny"]) == 2
    assert "run under torchrun" in capsys.readouterr().err


def test_a_schedule_this_torch_lacks_names_the_version():
    with pytest.raises(UsageError, match=r"dualpipev needs ScheduleDualPipeV, which needs torch >= 2.9; this is "
                                         r"torch 2.8.0"):
        check_torch("dualpipev", "2.8.0+cu126")
    check_torch("1f1b", "2.8.0")  # older schedules are fine


@pytest.mark.parametrize("schedule, stages", [("1f1b", 2), ("dualpipev", 4)])
def test_torchrun_two_processes_match_the_single_process_model(schedule, stages):
    """End to end on 2 CPU processes (gloo): logits, loss and every stage's gradients checked against
    DeepSeekLM; DualPipeV puts 4 stages on the 2 ranks as a V (rank 0: stages 0 and 3)."""
    if schedule == "dualpipev" and tuple(int(x) for x in torch.__version__.split(".")[:2]) < (2, 9):
        pytest.skip("ScheduleDualPipeV needs torch >= 2.9")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "minids.pipeline",
           "--preset", "tiny", "--n-layers", "4", "--schedule", schedule, "--microbatches", "4", "--batch", "4",
           "--seq-len", "16", "--check", "--repeats", "1"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert ": PASS" in out.stdout and f"{stages} stages on 2 ranks, cpu" in out.stdout


@pytest.mark.parametrize("name", ["deepseek-moe-16b"])
def test_moe_costs_hold_every_expert_but_run_the_active_ones(name):
    cfg = ModelConfig.preset(name)
    T = 1024
    embed, layers, head = module_costs(cfg, T)
    p = count_params(cfg)
    assert embed.params + sum(c.params for c in layers) + head.params == p.total
    assert sum(c.flops for c in layers) + head.flops == pytest.approx(matmul_flops_per_token(cfg, T) * T, rel=1e-12)
    dense, moe = layers[0], layers[1]  # first_k_dense_replace = 1
    # 64 experts held, but 6 routed + 2 shared of width 1408 run: about the dense layer's 10,944
    assert moe.params > 6 * dense.params and moe.flops == pytest.approx(dense.flops, rel=0.05)
    by_params, by_flops = partition(cfg, 4, by="params"), partition(cfg, 4, by="flops")
    assert by_params != by_flops  # the dense first layer is cheap to hold, as dear as the others to run


def test_window_layers_cost_less_attention():
    cfg = tiny_config(n_layers=2, max_seq_len=64).replace(sliding_window=8, layer_types=["sliding_attention",
                                                                                        "full_attention"])
    embed, layers, head = module_costs(cfg, 64)
    assert layers[0].params == layers[1].params and layers[0].flops < layers[1].flops
    assert sum(c.flops for c in layers) + head.flops == pytest.approx(matmul_flops_per_token(cfg, 64) * 64, rel=1e-12)
