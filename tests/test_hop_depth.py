"""The hop_depth experiment: parameter matching, and the gate and verdict rules on made-up records."""

import pytest

from minids.experiments import hop_depth


def record(n_layers, seed, acc):
    """A train record whose accuracy_by_k is acc(k) for k = 0..16."""
    return {"record": "train", "task": "hop_k", "n_layers": n_layers, "seed": seed, "d_ff": 100,
            "accuracy_by_k": {str(k): acc(k) for k in range(17)}}


def family(shallow, deep, seeds=(0, 1, 2), jitter=0.0):
    return [record(2, s, lambda k, s=s: shallow(k) + jitter * s) for s in seeds] + \
           [record(8, s, lambda k, s=s: deep(k) - jitter * s) for s in seeds]


def test_the_cuda_family_is_parameter_matched_and_trades_ffn_width():
    setting = hop_depth.SETTINGS["cuda"]
    shapes = {L: hop_depth.shape_of(setting, L) for L in setting.layers}
    assert all(abs(s.budget_error) <= 0.03 for s in shapes.values())
    assert {s.config.d_model for s in shapes.values()} == {256}
    assert shapes[2].config.d_ff > 10 * shapes[16].config.d_ff  # the "more than ten times wider"
    assert {2, 4, 8}.issubset(setting.layers) and max(setting.layers) >= 12 and len(setting.seeds) >= 3


def test_gate_failure_means_undertrained_whatever_the_gap():
    records = family(lambda k: 1.0 if k == 0 else 0.3, lambda k: 0.94 if k <= 1 else 0.9)
    v = hop_depth.verdict(records)
    assert not v["gate"]["passed"] and v["verdict"] == "undertrained" and "L8" in v["reason"]


def test_confirmed_needs_the_margin_every_seed_and_k_star():
    shallow = lambda k: 1.0 if k <= 4 else 0.4  # noqa: E731
    deep = lambda k: 1.0  # noqa: E731
    v = hop_depth.verdict(family(shallow, deep, jitter=0.001))
    assert v["gate"]["passed"] and v["verdict"] == "confirmed"
    assert v["k_star"] == {2: 4, 8: 16}
    # a gap of 0.15 at k = 12 is not enough
    v = hop_depth.verdict(family(lambda k: 1.0 if k <= 4 else (0.85 if k == 12 else 0.4), deep))
    assert v["verdict"] == "not decided" and "k = 12" in v["reason"]


def test_overlapping_seeds_do_not_confirm():
    recs = family(lambda k: 1.0 if k <= 4 else 0.4, lambda k: 1.0 if k <= 4 else 0.7)
    recs[0]["accuracy_by_k"]["16"] = 0.75  # one shallow seed above one deep seed at k = 16
    v = hop_depth.verdict(recs)
    assert v["verdict"] == "not decided" and "overlapping seeds" in v["reason"]


def test_refuted_when_shallow_matches_deep_at_k16():
    v = hop_depth.verdict(family(lambda k: 0.97, lambda k: 0.99))
    assert v["verdict"] == "refuted"


def test_diminishing_returns_is_reported_not_a_refutation():
    recs = family(lambda k: 1.0 if k <= 4 else 0.4, lambda k: 1.0)
    recs += [record(16, s, lambda k: 1.0 if k <= 8 else 0.8) for s in range(3)]
    v = hop_depth.verdict(recs)
    assert v["verdict"] == "confirmed" and "L16" in v["diminishing_returns"]


@pytest.mark.parametrize("incomplete", [{"incomplete": "deadline at step 5 of 10"}, {"error": "boom"}])
def test_incomplete_and_failed_runs_are_not_averaged(incomplete):
    recs = family(lambda k: 1.0 if k <= 4 else 0.4, lambda k: 1.0)
    recs.append({"record": "train", "task": "hop_k", "n_layers": 8, "seed": 3, **incomplete})
    assert hop_depth.by_depth(recs)[8]["seeds"] == [0, 1, 2]


def test_tiny_run_end_to_end_writes_the_file(tmp_path):
    out = tmp_path / "hop_k_cpu.json"
    records = hop_depth.run_experiment(hop_depth.SETTINGS["tiny"], "cpu", str(out), log=lambda s: None)
    saved = hop_depth.load_results(str(out))
    assert saved[-1]["record"] == "verdict" and saved[-1]["verdict"] == records[-1]["verdict"]
    runs = [r for r in saved if r["record"] == "train"]
    assert {r["n_layers"] for r in runs} == {2, 4}
    for key in ("task", "n_layers", "d_model", "d_ff", "n_heads", "n_kv_heads", "non_embedding_params", "seed",
                "steps", "tokens", "accuracy_by_k", "final_loss", "device"):
        assert all(key in r for r in runs), key
    assert set(runs[0]["accuracy_by_k"]) == {str(k) for k in range(5)}
