"""minids.scaling against the paper's own tables (../shared/FACTS.md section 3)."""

import json
import math

import numpy as np
import pytest

from minids import ModelConfig, count_params, paper_M
from minids.scaling import (
    TABLE4_EXPONENTS,
    compute_where_optimal,
    fit_power_law,
    flops_per_token,
    model_scale,
    optimal_allocation,
    optimal_batch_sequences,
    optimal_batch_tokens,
    optimal_lr,
    real_flops_per_token,
    six_n1,
    six_n2,
    training_recipe,
    weights_per_layer,
)

# Table 3 of the paper: (n_layers, d_model) -> (6N1/M, 6N2/M) at n_vocab 102400, l_seq 4096.
TABLE3 = {(8, 512): (0.43, 1.32), (24, 2048): (0.75, 0.88), (80, 8192): (0.92, 0.94)}


@pytest.mark.parametrize("shape", list(TABLE3))
def test_table3_ratios(shape):
    L, d = shape
    M = flops_per_token(L, d, 4096)
    assert (round(six_n1(L, d) / M, 2), round(six_n2(L, d, 102400) / M, 2)) == TABLE3[shape]


def test_eq2_by_hand_and_one_formula():
    # 72 * 30 * 4096² + 12 * 30 * 4096 * 4096 = 42.28e9 (FACTS: the 7B's M).
    assert flops_per_token(30, 4096, 4096) == 72 * 30 * 4096**2 + 12 * 30 * 4096 * 4096
    assert round(flops_per_token(30, 4096, 4096) / 1e9, 2) == 42.28
    assert round(flops_per_token(95, 8192, 4096) / 1e11, 2) == 4.97
    cfg = ModelConfig.preset("deepseek-llm-67b")
    assert flops_per_token(95, 8192, 4096) == paper_M(cfg, 4096) == model_scale(cfg).M_eq2


# Table 2: batch size (sequences of 4096) and peak lr used, against what Eq. 1 gives at C = M * 2T tokens.
@pytest.mark.parametrize(
    "name, C, law_batch, law_lr, used_batch, used_lr",
    [
        ("deepseek-llm-7b", 8.46e22, 2252, 4.25e-4, 2304, 4.2e-4),
        ("deepseek-llm-67b", 9.95e23, 5043, 3.12e-4, 4608, 3.2e-4),
    ],
)
def test_table2_from_the_laws(name, C, law_batch, law_lr, used_batch, used_lr):
    r = training_recipe(ModelConfig.preset(name), tokens=2e12)
    assert r.C == pytest.approx(C, rel=1e-3)
    assert round(r.batch_sequences) == law_batch
    assert round(r.lr, 6) == pytest.approx(law_lr, abs=1e-6)
    assert r.batch_sequences == pytest.approx(optimal_batch_sequences(r.C, 4096))
    # The paper rounded the law's values to what it used: within 10% for batch, 3% for lr.
    assert abs(r.batch_sequences / used_batch - 1) < 0.10
    assert abs(r.lr / used_lr - 1) < 0.03


def test_law_values_at_a_round_budget():
    # Computed by hand: 0.3118 * 1e20**-0.125 and 0.2920 * 1e20**0.3271.
    assert optimal_lr(1e20) == pytest.approx(0.3118 * 10 ** (-2.5), rel=1e-12)
    assert optimal_batch_tokens(1e20) == pytest.approx(0.2920 * 10 ** (20 * 0.3271), rel=1e-12)
    assert optimal_lr(1e20) > optimal_lr(1e22)  # bigger budget: lower lr
    assert optimal_batch_tokens(1e20) < optimal_batch_tokens(1e22)  # and bigger batches


def test_allocation_spends_the_budget():
    for C in (1e17, 1e20, 1e24):
        M_opt, D_opt = optimal_allocation(C)
        assert M_opt * D_opt == pytest.approx(C, rel=2e-4)  # 0.1715 * 5.8316 = 1.0001
        assert M_opt == pytest.approx(0.1715 * C**0.5243)
        assert compute_where_optimal(M_opt) == pytest.approx(C, rel=1e-9)


def test_arrays_for_plotting():
    C = np.logspace(17, 24, 8)
    lr = optimal_lr(C)
    assert isinstance(lr, np.ndarray) and lr.shape == (8,)
    assert np.all(np.diff(lr) < 0)
    assert isinstance(optimal_lr(1e20), float)
    coeff, exponent = fit_power_law(C, optimal_batch_tokens(C))
    assert (coeff, exponent) == (pytest.approx(0.2920), pytest.approx(0.3271))


def test_table4_exponents_add_to_one():
    for name, (a, b) in TABLE4_EXPONENTS.items():
        assert a + b == pytest.approx(1.0), name
    assert TABLE4_EXPONENTS["DeepSeek, current data"] == (0.524, 0.476)


def test_weights_per_layer_in_d2():
    # FACTS: Eq. 2 assumes 12 d² per layer; the GQA 67B has 10.31 d² (per layer 150,994,944 + 541,065,216).
    s67 = model_scale(ModelConfig.preset("deepseek-llm-67b"))
    assert s67.weights_per_layer == 150_994_944 + 541_065_216
    assert round(s67.d2_per_layer, 2) == 10.31
    s7 = model_scale(ModelConfig.preset("deepseek-llm-7b"))
    assert s7.weights_per_layer == 67_108_864 + 135_266_304
    assert round(s7.d2_per_layer, 2) == 12.06
    # MHA at the 67B's shape: K and V back to d² each.
    mha = model_scale(ModelConfig.preset("deepseek-llm-67b").replace(n_kv_heads=64))
    assert mha.weights_per_layer - s67.weights_per_layer == 2 * 8192 * 8192 - 2 * 8192 * 1024
    assert s67.eq2_overstates == pytest.approx(12 / 10.3125, rel=0.03)


def test_real_M_from_count_params():
    cfg = ModelConfig.preset("deepseek-llm-67b")
    p = count_params(cfg)
    W = (p.attention + p.ffn) / cfg.n_layers
    assert weights_per_layer(cfg) == W
    assert real_flops_per_token(cfg) == 6 * W * 95 + 12 * 95 * 8192 * 4096
    assert real_flops_per_token(cfg, 2048) < real_flops_per_token(cfg)
    # An Eq.-2-shaped layer (4 d² attention, 8 d² FFN over three matrices of d x 8d/3): real M == Eq. 2.
    exact = ModelConfig(vocab_size=64, d_model=96, n_layers=3, n_heads=4, n_kv_heads=4, d_ff=256, max_seq_len=32)
    assert real_flops_per_token(exact) == flops_per_token(3, 96, 32)


def test_real_M_moves_the_67b_closer_to_table2():
    eq2 = training_recipe(ModelConfig.preset("deepseek-llm-67b"), 2e12, scale="eq2")
    real = training_recipe(ModelConfig.preset("deepseek-llm-67b"), 2e12, scale="real")
    assert abs(real.batch_sequences - 4608) < abs(eq2.batch_sequences - 4608)
    assert abs(real.lr - 3.2e-4) < abs(eq2.lr - 3.2e-4)


def test_7b_trained_far_past_compute_optimal():
    r = training_recipe(ModelConfig.preset("deepseek-llm-7b"), 2e12)
    assert r.tokens_where_optimal == pytest.approx(r.C_where_optimal / r.M)
    assert r.tokens > 10 * r.tokens_where_optimal  # 2T tokens vs ~126B at its optimal budget
    assert r.M < r.M_opt  # at 8.5e22 FLOPs the law would pick a bigger model


@pytest.mark.parametrize("bad", [0, -1e20, float("nan"), float("inf"), [1e20, 0.0]])
def test_budget_outside_the_domain(bad):
    with pytest.raises(ValueError, match="compute budget"):
        optimal_lr(bad)
    with pytest.raises(ValueError, match="compute budget"):
        optimal_allocation(bad)


@pytest.mark.parametrize("bad", [True, "1e20", None])
def test_budget_of_the_wrong_type(bad):
    with pytest.raises(TypeError, match="compute budget"):
        optimal_batch_tokens(bad)


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((2.5, 512, 4096), TypeError, "n_layers must be a positive integer, got 2.5"),
        ((0, 512, 4096), ValueError, "n_layers must be a positive integer, got 0"),
        ((8, -512, 4096), ValueError, "d_model"),
        ((8, 512, 0), ValueError, "seq_len"),
        ((8, True, 4096), TypeError, "d_model"),
    ],
)
def test_shape_errors(args, error, match):
    with pytest.raises(error, match=match):
        flops_per_token(*args)


def test_other_errors():
    with pytest.raises(ValueError, match="vocab"):
        six_n2(8, 512, 0)
    with pytest.raises(ValueError, match="scale must be"):
        training_recipe(ModelConfig.preset("tiny"), 1e9, scale="params")
    with pytest.raises(ValueError, match="tokens"):
        training_recipe(ModelConfig.preset("tiny"), 0)
    with pytest.raises(TypeError, match="ModelConfig"):
        model_scale({"n_layers": 2})
    with pytest.raises(ValueError, match="M"):
        compute_where_optimal(-1.0)
    with pytest.raises(ValueError, match="same length"):
        fit_power_law([1.0, 2.0], [1.0])
    assert math.isfinite(optimal_batch_sequences(1e20, 2048))


# ---- the IsoFLOP experiment (minids.experiments.isoflop) ----------------------------------------------
from minids.experiments import isoflop  # noqa: E402


def test_isoflop_plan_spends_the_budget():
    plans = isoflop.plan_runs([1e10, 1e11], isoflop.CPU_SHAPES, seq_len=128, train_tokens=1_400_000)
    assert len(plans) == 2 * len(isoflop.CPU_SHAPES)
    for p in plans:
        cfg = isoflop.toy_config(p.n_layers, p.d_model, p.n_heads, p.seq_len)
        assert p.M == real_flops_per_token(cfg, 128)
        assert p.tokens == p.steps * p.batch_size * p.seq_len
        assert p.C_spent == p.M * p.tokens
        assert p.batch_size == max(1, round(optimal_batch_tokens(p.budget) / 128))  # Eq. 1, in sequences
        assert p.peak_lr == pytest.approx(optimal_lr(p.budget))
        if p.skip is None:  # rounding to whole steps moves the spent budget by less than half a step
            assert abs(p.C_spent - p.budget) <= p.M * p.batch_size * p.seq_len / 2
            assert p.steps >= 40 and p.epochs <= 4
    skipped = {p.name: p.skip for p in plans if p.budget == 1e10 and p.skip}
    assert "min_steps" in skipped["L3-d96"]  # the biggest shape gets too few steps at the smallest budget
    # The shapes grow in M, and a fixed lr overrides Eq. 1.
    Ms = [p.M for p in plans[: len(isoflop.CPU_SHAPES)]]
    assert Ms == sorted(Ms)
    assert {p.peak_lr for p in isoflop.plan_runs([1e10], isoflop.CPU_SHAPES, 128, 10**6, lr=1e-3)} == {1e-3}


def test_isoflop_skips_too_many_epochs():
    (p,) = isoflop.plan_runs([1e12], [(1, 8, 1)], seq_len=128, train_tokens=100_000)
    assert p.skip is not None and "passes over the corpus" in p.skip


def test_isoflop_profiles_average_seeds():
    runs = [
        {"budget": 1e10, "name": "a", "M": 1.0, "tokens": 10, "val_loss": 2.0},
        {"budget": 1e10, "name": "a", "M": 1.0, "tokens": 10, "val_loss": 3.0},
        {"budget": 1e10, "name": "b", "M": 2.0, "tokens": 5, "val_loss": 2.4},
        {"budget": 1e10, "name": "c", "M": 4.0, "tokens": 2, "error": "RuntimeError: boom"},
    ]
    prof = isoflop.profiles({"runs": runs})
    assert [e["name"] for e in prof[1e10]] == ["a", "b"]
    assert prof[1e10][0]["val_loss"] == 2.5
    assert isoflop.best_per_budget({"runs": runs})[1e10]["name"] == "b"


def test_isoflop_end_to_end_records_failures(tmp_path, monkeypatch):
    real_run_one = isoflop.run_one

    def flaky(plan, *args, **kwargs):
        if plan.budget == 2e8:
            raise RuntimeError("simulated failure")
        return real_run_one(plan, *args, **kwargs)

    monkeypatch.setattr(isoflop, "run_one", flaky)
    result = isoflop.main(["--quick", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "isoflop_quick.json").read_text())
    assert saved["runs"] == json.loads(json.dumps(result["runs"]))
    by = {(r["budget"], r["name"]): r for r in saved["runs"]}
    assert math.isfinite(by[1e8, "L1-d8"]["val_loss"]) and by[1e8, "L1-d8"]["val_loss"] < math.log(256)
    assert by[1e8, "L1-d16"]["skip"]  # too few steps at this budget
    assert "simulated failure" in by[2e8, "L1-d8"]["error"]  # recorded, and the others kept
    assert saved["paper_M_opt"]["1e+08"] == pytest.approx(optimal_allocation(1e8)[0])
