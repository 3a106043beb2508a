"""The MoE-vs-dense experiment (minids.experiments.moe_vs_dense) in its tiny CPU setting (runs side by side in
worker processes, resumed, cut by the deadline), and the benchmark's CPU check (benchmarks/bench_moe.py --small)."""

import json
import os
import subprocess
import sys
import time
from dataclasses import replace

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


def test_tiny_runs_side_by_side_resume_and_keep_the_deadline(tmp_path):
    path = tmp_path / "moe.json"
    common = ["tiny", "--results", str(path), "--seeds", "0", "--steps", "6"]
    doc = exp.main(common + ["--parts", "active,balance", "--workers", "2"])  # 4 runs, 2 processes side by side
    runs = {r["variant"]: r for r in doc["runs"]}
    assert set(runs) == {"dense", "moe", "moe-noaux", "moe-bias"} and all(r["status"] == "done" for r in runs.values())
    assert all(r["concurrent_runs"] == 2 for r in runs.values()) and doc["workers_last"] == 2
    assert json.loads(path.read_text()) == json.loads(json.dumps(doc))  # every record is in the file
    moe, dense = runs["moe"], runs["dense"]
    assert moe["params_total"] > dense["params_total"] and len(moe["evals"]) == 1 and moe["steps"] == 6
    n_moe = exp.variant_config(exp.SETTINGS["tiny"], "moe").n_moe_layers
    load = torch.tensor(moe["final"]["load"])
    windows = exp.SETTINGS["tiny"].val_windows * exp.SETTINGS["tiny"].seq_len
    assert load.shape == (n_moe, 7) and (load.sum(-1) == windows * 3).all()  # every token's 3 picks, each layer
    assert len(moe["final"]["imbalance"]) == n_moe and min(moe["final"]["imbalance"]) >= 1
    assert "aux_curve" in moe and "imbalance" not in dense["final"]
    assert len(runs["moe-bias"]["expert_bias"]) == n_moe
    setting = replace(exp.SETTINGS["tiny"], seeds=(0,), steps=6)  # the same run in this process: the same numbers
    alone = exp.run_one(setting, "dense", 0, exp.cached_data(setting, "cpu"), "cpu")  # (to the bit on 1 thread)
    assert alone["final"]["val_loss"] == pytest.approx(dense["final"]["val_loss"], rel=1e-5)
    assert alone["curve"]["loss"] == pytest.approx(dense["curve"]["loss"], rel=1e-5)

    doc = exp.main(common + ["--parts", "active,total", "--deadline-s", "0"])  # dense, moe are done: kept
    assert {r["variant"]: r["status"] for r in doc["runs"]}["dense-deep"] == "skipped: deadline"
    assert set(exp.summarize(doc)) == {"dense", "moe", "moe-noaux", "moe-bias"}
    assert [r for r in doc["runs"] if r["status"] == "done"] == list(runs.values())

    doc = exp.main(common + ["--parts", "active,total"])  # one worker, in this process: dense-deep alone runs
    after = {r["variant"]: r for r in doc["runs"]}
    assert after["dense-deep"]["status"] == "done" and after["dense-deep"]["concurrent_runs"] == 1
    assert all(after[v] == r for v, r in runs.items())  # not run again
    assert json.loads(path.read_text()) == json.loads(json.dumps(doc))


def test_a_run_stops_at_the_deadline_and_is_not_averaged():
    setting = exp.SETTINGS["tiny"]
    job = {"setting": setting, "variant": "dense", "seed": 0, "device": "cpu", "steps": 6, "threads": None,
           "concurrent_runs": 1}
    assert exp._worker({**job, "deadline": time.time() - 1})["status"] == "skipped: deadline"  # not started
    data = exp.cached_data(setting, "cpu")
    with pytest.raises(exp._Deadline, match="deadline at step 0 of 6"):  # started, then past the deadline
        exp.run_one(setting, "dense", 0, data, "cpu", steps=6, deadline=time.time() - 1)
    doc = {"runs": [{"variant": "dense", "seed": 0, "status": "incomplete: deadline at step 3 of 6"},
                    {"variant": "moe", "seed": 0, "status": "skipped: deadline"}]}
    assert exp.summarize(doc) == {} and exp.todo_runs(doc, setting, ["active"])[:2] == [("dense", 0), ("moe", 0)]


def test_a_lone_run_that_would_pass_the_deadline_stops_early():
    def get_batch(step, generator):
        time.sleep(0.01)
        return step

    steps = 400  # timed from step 10 to step 30
    late = exp.watch_deadline(get_batch, steps, time.time() + 2.0, project=True)  # the rest needs > 4 s
    with pytest.raises(exp._Deadline, match="projected to end .* after the deadline .*step 30 of 400"):
        for step in range(steps):
            late(step, None)
    in_time = exp.watch_deadline(get_batch, steps, time.time() + 120.0, project=True)
    assert [in_time(step, None) for step in range(31)] == list(range(31))
    beside_others = exp.watch_deadline(get_batch, steps, time.time() + 3.0, project=False)
    assert [beside_others(step, None) for step in range(31)] == list(range(31))  # stops at the deadline only


def test_the_committed_cuda_results_resume():
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "results",
                        "moe_vs_dense_cuda.json")
    doc = json.loads(open(path, encoding="utf-8").read())
    setting = exp.SETTINGS["cuda"]
    assert doc["setting"] == exp._setting_dict(setting)  # so the command resumes from it, not starting over
    done = {(r["variant"], r["seed"]) for r in doc["runs"] if r["status"] == "done"}
    parts = list(exp.PARTS)
    todo = exp.todo_runs(doc, setting, parts)
    assert done and not done & set(todo) and set(todo) | done == set(exp.plan(setting, parts))


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
