"""The MoE-vs-dense experiment (minids.experiments.moe_vs_dense) in its tiny CPU setting, and the benchmark's
CPU check (benchmarks/bench_moe.py --small)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from minids import count_params
from minids.experiments import moe_vs_dense as exp


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", list(exp.SETTINGS))
def test_variants_match_what_they_claim(name):
    setting = exp.SETTINGS[name]
    dense, moe = (count_params(exp.variant_config(setting, v)) for v in ("dense", "moe"))
    cfg = exp.variant_config(setting, "moe")
    router = cfg.n_moe_layers * cfg.d_model * cfg.n_routed_experts
    assert moe.active - dense.total == router  # equal active parameters, but for the router
    assert moe.total > 2 * dense.total or name == "tiny"
    deep = exp.variant_config(setting, "dense-deep")
    per_layer = count_params(setting.dense).per_layer
    assert abs(count_params(deep).total - moe.total) <= per_layer / 2  # equal total, to within half a layer
    assert exp.variant_config(setting, "moe-bias").bias_update_speed > 0
    assert exp.variant_config(setting, "moe-noaux").aux_loss_alpha == 0


def test_tiny_runs_resume_and_keep_the_deadline(tmp_path):
    path = tmp_path / "moe.json"
    common = ["tiny", "--results", str(path), "--seeds", "0", "--steps", "6"]
    doc = exp.main(common + ["--parts", "active"])
    runs = {r["variant"]: r for r in doc["runs"]}
    assert set(runs) == {"dense", "moe"} and all(r["status"] == "done" for r in runs.values())
    assert json.loads(path.read_text()) == json.loads(json.dumps(doc))
    moe, dense = runs["moe"], runs["dense"]
    assert moe["params_total"] > dense["params_total"] and len(moe["evals"]) == 1 and moe["steps"] == 6
    n_moe = exp.variant_config(exp.SETTINGS["tiny"], "moe").n_moe_layers
    load = torch.tensor(moe["final"]["load"])
    windows = exp.SETTINGS["tiny"].val_windows * exp.SETTINGS["tiny"].seq_len
    assert load.shape == (n_moe, 7) and (load.sum(-1) == windows * 3).all()  # every token's 3 picks, each layer
    assert len(moe["final"]["imbalance"]) == n_moe and min(moe["final"]["imbalance"]) >= 1
    assert "aux_curve" in moe and "imbalance" not in dense["final"]

    doc = exp.main(common + ["--parts", "active,balance"])  # dense and moe are already there
    runs = {r["variant"]: r for r in doc["runs"]}
    assert set(runs) == {"dense", "moe", "moe-noaux", "moe-bias"}
    assert runs["moe"]["wall_seconds"] == moe["wall_seconds"]  # not run again
    assert len(runs["moe-bias"]["expert_bias"]) == n_moe

    doc = exp.main(common + ["--parts", "total", "--deadline-s", "0"])
    assert {r["variant"]: r["status"] for r in doc["runs"]}["dense-deep"] == "skipped: deadline"
    assert set(exp.summarize(doc)) == {"dense", "moe", "moe-noaux", "moe-bias"}


def test_benchmark_cpu_check(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, os.path.join(root, "benchmarks", "bench_moe.py"), "--small", "--device", "cpu",
                    "--out", str(tmp_path), "--warmup", "1", "--repeats", "1"], check=True, env=env,
                   capture_output=True, timeout=120)
    records = json.loads((tmp_path / "small_moe.json").read_text())
    by = {(r["metric"], r["impl"]): r for r in records}
    assert all(r["value"] is not None for r in records), [r for r in records if r["value"] is None]
    for impl in ("dispatch", "grouped"):
        if ("layer_rel_err_vs_reference", impl) in by:
            assert by[("layer_rel_err_vs_reference", impl)]["value"] < 1e-5
    assert ("train_tok_s_ratio_moe_vs_dense", "minids") in by
    assert {r["model"] for r in records if r["metric"] == "decode_tok_s"} == {"deepseek-moe-16b", "deepseek-llm-7b"}
