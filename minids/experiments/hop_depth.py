"""Depth vs width on hop_k: the depth threshold at matched parameters, trained until the models learn.

    python -m minids.experiments.hop_depth --device cuda --out data/results        # one H200 (parts: below)
    python -m minids.experiments.hop_depth --setting tiny                           # seconds on a CPU

A family of DeepSeek-shaped models with ONE non-embedding budget (within 3%) at fixed d_model, depth bought
with FFN width as DeepSeek did (shapes.py): at d_model 256 the 2-layer member's d_ff is 3,520 and the
16-layer member's 216. Every (depth, seed) trains with the project's recipe (train.py: AdamW 0.9/0.95, wd 0.1,
clip 1.0, warm-up + multi-step schedule, bf16 autocast on CUDA) for the same steps on fresh hop_k sequences
(data/hop.py; the stream is a function of the seed, so depths that share a seed see identical batches),
then is scored per k = 0..16 on held-out sequences of their own seed.

Decided before any result was looked at, and computed from the file by `verdict()`:

    gate      every depth >= 2 reaches mean accuracy >= 0.95 at k = 0 and at k = 1; otherwise the run is
              UNDERTRAINED and says nothing about depth (fix the training, never the gate)
    k*(L)     the largest k at which depth L's mean accuracy is >= 0.95
    confirmed at k = 12 and at k = 16, the 8-layer mean beats the 2-layer mean by >= 0.20, every 8-layer
              seed beats every 2-layer seed, and k*(2) < k*(8): "depth helps composition"
    refuted   the 2-layer mean is within 0.05 of the 8-layer mean at k = 16, both >= 0.9
    otherwise not decided, with the reason. The deepest shape doing worse than a middle one is reported as
              diminishing returns (Petty et al. 2023), not as a refutation.

On one GPU the runs go several at a time (--workers processes): these models are small, so one run alone
leaves the H200 idle between its kernel launches, and runs side by side fill those gaps. Each run is its own
process (its own compile), and its record is written to the JSON file (atomically) as soon as it ends, with
the verdict recomputed; a run that would pass the deadline stops and is recorded as incomplete, not
averaged. The full run can be split into parts of under 10 minutes that merge into one file:

    python -m minids.experiments.hop_depth --device cuda --layers 2 4 8 16 --out data/results
    python -m minids.experiments.hop_depth --device cuda --layers 3 6 12 --merge --out data/results
"""

from __future__ import annotations

import datetime
import os
import platform
import time
import traceback
from dataclasses import asdict, dataclass

import torch

from ..data.hop import HopKTask
from ..results import write_json_atomic
from ..shapes import Shape, budget_of, shape_for
from .side_by_side import depth_experiment_main, merge_refusal, run_side_by_side
from .depth_vs_width import binned, device_name, load_results, mean_std

GATE_ACCURACY = 0.95  # at k = 0 and k = 1, every depth >= 2
SOLVED = 0.95  # k*(L): the largest k with mean accuracy >= SOLVED
CONFIRM_KS = (12, 16)  # where the 8-layer model must beat the 2-layer one ...
CONFIRM_MARGIN = 0.20  # ... by this much (absolute accuracy)
REFUTE_GAP, REFUTE_FLOOR = 0.05, 0.9  # refuted: within 0.05 at k = 16, both >= 0.9
SHALLOW, DEEP = 2, 8  # the pair the rule compares


@dataclass(frozen=True)
class HopSetting:
    d_model: int  # the budget is that of d_model x reference_layers with d_ff = reference_d_ff
    reference_layers: int
    reference_d_ff: int
    head_dim: int
    kv_ratio: int
    layers: tuple[int, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    n: int = 128  # positions per sequence
    max_hops: int = 16
    batch_size: int = 512
    steps: int = 2000
    peak_lr: float = 1e-3
    warmup_steps: int = 200
    evals: int = 10  # points on the learning curve
    curve_per_k: int = 64  # held-out sequences per k at each curve point
    eval_per_k: int = 256  # held-out sequences per k for the final accuracy
    multiple_of: int = 8
    compile: bool = False  # torch.compile each layer (minids.fast.compile_model)
    workers: int = 1  # runs side by side
    deadline_s: float = 3600.0  # from the start of the command


SETTINGS: dict[str, HopSetting] = {
    # One H200: width 256, GQA 8/4 heads, the ~5.8M non-embedding budget of an 8 x 256 model with the usual
    # d_ff 688; 2,000 steps of 512 fresh sequences = 1.0M sequences (131M tokens) per run, a third of the
    # paper's 3.2M, at a 10x larger learning rate (1e-3 vs 1e-4) for a 16x larger batch.
    "cuda": HopSetting(d_model=256, reference_layers=8, reference_d_ff=688, head_dim=32, kv_ratio=2,
                       layers=(2, 3, 4, 6, 8, 12, 16), compile=True, workers=7, deadline_s=560.0),
    # A CPU run of the same code: width 64, k up to 8, shorter sequences; minutes on two cores.
    "cpu": HopSetting(d_model=64, reference_layers=4, reference_d_ff=176, head_dim=16, kv_ratio=2,
                      layers=(2, 4, 8), n=64, max_hops=8, batch_size=64, steps=600, peak_lr=3e-3, warmup_steps=30,
                      evals=6, curve_per_k=16, eval_per_k=64, workers=2),
    # The chapter's live part: seconds; it shows the machinery and does not learn hop_k.
    "tiny": HopSetting(d_model=32, reference_layers=2, reference_d_ff=88, head_dim=16, kv_ratio=2, layers=(2, 4),
                       seeds=(0,), n=32, max_hops=4, batch_size=32, steps=80, peak_lr=3e-3, warmup_steps=8,
                       evals=4, curve_per_k=16, eval_per_k=32, multiple_of=4),
}


def task_of(setting: HopSetting) -> HopKTask:
    return HopKTask(n=setting.n, max_hops=setting.max_hops)


def budget(setting: HopSetting) -> int:
    return budget_of(setting.d_model, setting.reference_layers, setting.reference_d_ff, setting.head_dim,
                     setting.kv_ratio)


def shape_of(setting: HopSetting, n_layers: int) -> Shape:
    return shape_for(budget(setting), setting.d_model, n_layers, head_dim=setting.head_dim,
                     kv_ratio=setting.kv_ratio, vocab_size=task_of(setting).vocab_size,
                     max_seq_len=setting.n, multiple_of=setting.multiple_of)


# ---- one run --------------------------------------------------------------------------------------


class _Deadline(Exception):
    pass


def train_run(setting: HopSetting, n_layers: int, seed: int, device: str, deadline: float | None = None,
              concurrent_runs: int = 1) -> dict:
    """Train one (depth, seed) and score it: the record for the results file. `deadline` is a time.time()."""
    from ..fast import compile_model
    from ..model import DeepSeekLM
    from ..train import TrainConfig, autocast_context, train

    device = torch.device(device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    task, shape = task_of(setting), shape_of(setting, n_layers)
    cfg = shape.config
    torch.manual_seed(seed)  # the initial weights depend on the seed, as the data stream does
    model = DeepSeekLM(cfg, device=device)
    if setting.compile:
        compile_model(model)
    stream = task.batches(setting.batch_size, seed, device)

    def get_batch(step, generator):
        if deadline is not None and time.time() > deadline:
            raise _Deadline(step)
        return stream(step, generator)

    curve_set = task.eval_set(setting.curve_per_k, seed=10_000, device=device)
    final_set = task.eval_set(setting.eval_per_k, seed=20_000, device=device)
    config = TrainConfig(steps=setting.steps, batch_size=setting.batch_size, seq_len=setting.n,
                         peak_lr=setting.peak_lr, warmup_steps=min(setting.warmup_steps, setting.steps),
                         eval_every=max(1, setting.steps // setting.evals), seed=seed, device=str(device))
    base = {"record": "train", "task": "hop_k", "shape": shape.name, "n_layers": cfg.n_layers,
            "d_model": cfg.d_model, "d_ff": cfg.d_ff, "n_heads": cfg.n_heads, "n_kv_heads": cfg.n_kv_heads,
            "non_embedding_params": shape.non_embedding, "budget": shape.budget, "seed": seed,
            "device": str(device), "device_name": device_name(device)}
    try:
        history = train(model, get_batch, config, eval_fn=lambda m: task.evaluate(m, curve_set), progress=False)
    except _Deadline as stop:
        return {**base, "incomplete": f"deadline at step {stop.args[0]} of {setting.steps}"}
    model.eval()
    with torch.no_grad(), autocast_context(device):
        final = task.evaluate(model, final_set)
    steps, losses = binned(history["losses"], bins=40)
    return {
        **base, "steps": setting.steps, "batch_size": setting.batch_size, "seq_len": setting.n,
        "tokens": history["tokens"], "sequences": setting.steps * setting.batch_size,
        "peak_lr": setting.peak_lr, "warmup_steps": setting.warmup_steps, "schedule": config.schedule,
        "accuracy_by_k": {str(k): v for k, v in final["accuracy_by_k"].items()},
        "final_loss": final["loss"],  # held-out, every position
        "eval_sequences_per_k": setting.eval_per_k,
        "curve": [{"step": e["step"], "loss": e["loss"],
                   "accuracy_by_k": {str(k): v for k, v in e["accuracy_by_k"].items()}} for e in history["evals"]],
        "train_curve": {"step": steps, "loss": losses},
        "tokens_per_s": history["tokens_per_s"], "train_seconds": history["train_seconds"],
        "concurrent_runs": concurrent_runs,  # tokens/s is per run, with this many runs sharing the device
    }


def _worker(args):
    setting, n_layers, seed, device, deadline, concurrent_runs = args
    try:
        return train_run(setting, n_layers, seed, device, deadline, concurrent_runs)
    except Exception as exc:  # noqa: BLE001: one failed run is recorded, the rest go on
        return {"record": "train", "task": "hop_k", "n_layers": n_layers, "seed": seed, "error": repr(exc),
                "traceback": traceback.format_exc()}


# ---- the verdict (fixed before running) -------------------------------------------------------------


def by_depth(records: list[dict]) -> dict[int, dict]:
    """Per depth: the complete runs, and the seed mean / std / min / max of accuracy per k (int keys)."""
    runs = [r for r in records if r.get("record") == "train" and r.get("task") == "hop_k" and "accuracy_by_k" in r]
    out: dict[int, dict] = {}
    for r in runs:
        out.setdefault(r["n_layers"], {"runs": []})["runs"].append(r)
    for depth, entry in out.items():
        ks = sorted(int(k) for k in entry["runs"][0]["accuracy_by_k"])
        accs = {k: [r["accuracy_by_k"][str(k)] for r in entry["runs"]] for k in ks}
        entry.update(seeds=sorted(r["seed"] for r in entry["runs"]), d_ff=entry["runs"][0]["d_ff"],
                     mean={k: mean_std(v)[0] for k, v in accs.items()},
                     std={k: mean_std(v)[1] for k, v in accs.items()},
                     min={k: min(v) for k, v in accs.items()}, max={k: max(v) for k, v in accs.items()})
    return dict(sorted(out.items()))


def k_star(mean: dict[int, float]) -> int:
    """The largest k whose mean accuracy is >= SOLVED (-1 if none)."""
    solved = [k for k, a in mean.items() if a >= SOLVED]
    return max(solved) if solved else -1


def verdict(records: list[dict]) -> dict:
    """The gate and the verdict, from the records alone (rules in the module docstring)."""
    depths = by_depth(records)
    rules = {"gate": f"every depth >= 2 has mean accuracy >= {GATE_ACCURACY} at k = 0 and k = 1",
             "confirmed": f"at k = {CONFIRM_KS}: mean(L{DEEP}) - mean(L{SHALLOW}) >= {CONFIRM_MARGIN}, "
                          f"min over L{DEEP} seeds > max over L{SHALLOW} seeds, and k*({SHALLOW}) < k*({DEEP})",
             "refuted": f"|mean(L{SHALLOW}) - mean(L{DEEP})| <= {REFUTE_GAP} at k = 16 with both >= {REFUTE_FLOOR}",
             "k_star": f"largest k with mean accuracy >= {SOLVED}"}
    gate_inputs = {d: {"k0": e["mean"].get(0), "k1": e["mean"].get(1)} for d, e in depths.items() if d >= 2}
    gate_passed = bool(gate_inputs) and all(
        v["k0"] is not None and v["k1"] is not None and v["k0"] >= GATE_ACCURACY and v["k1"] >= GATE_ACCURACY
        for v in gate_inputs.values())
    out = {"record": "verdict", "rules": rules, "depths": sorted(depths),
           "seeds": {d: e["seeds"] for d, e in depths.items()},
           "gate": {"passed": gate_passed, "threshold": GATE_ACCURACY, "inputs": gate_inputs},
           "k_star": {d: k_star(e["mean"]) for d, e in depths.items()}}
    if not gate_passed:
        failing = [f"L{d} (k0 {v['k0']:.3f}, k1 {v['k1']:.3f})" for d, v in gate_inputs.items()
                   if not (v["k0"] >= GATE_ACCURACY and v["k1"] >= GATE_ACCURACY)]  # the runs score k = 0..max_hops
        out.update(verdict="undertrained", reason=("no runs" if not gate_inputs else
                   "gate failed: " + ", ".join(failing) + f" below {GATE_ACCURACY}; the runs say nothing about depth"))
        return out
    if SHALLOW not in depths or DEEP not in depths:
        out.update(verdict="not decided", reason=f"the rule needs depths {SHALLOW} and {DEEP}; have {sorted(depths)}")
        return out
    s, d = depths[SHALLOW], depths[DEEP]
    if any(k not in s["mean"] for k in CONFIRM_KS):
        out.update(verdict="not decided", reason=f"the rule needs k = {CONFIRM_KS}; these runs stop at k = {max(s['mean'])}")
        return out
    inputs = {k: {"mean_shallow": s["mean"][k], "mean_deep": d["mean"][k], "gap": d["mean"][k] - s["mean"][k],
                  "max_shallow_seed": s["max"][k], "min_deep_seed": d["min"][k]} for k in CONFIRM_KS}
    ks_ok = {k: v["gap"] >= CONFIRM_MARGIN and v["min_deep_seed"] > v["max_shallow_seed"] for k, v in inputs.items()}
    kstar_ok = out["k_star"][SHALLOW] < out["k_star"][DEEP]
    out["rule_inputs"] = {"by_k": inputs, "k_star_shallow": out["k_star"][SHALLOW], "k_star_deep": out["k_star"][DEEP]}
    i16 = inputs[16]
    if all(ks_ok.values()) and kstar_ok:
        out.update(verdict="confirmed", reason=(
            f"L{DEEP} beats L{SHALLOW} by {inputs[12]['gap']:.3f} at k = 12 and {i16['gap']:.3f} at k = 16 "
            f"(every seed), k*({SHALLOW}) = {out['k_star'][SHALLOW]} < k*({DEEP}) = {out['k_star'][DEEP]}"))
    elif abs(i16["gap"]) <= REFUTE_GAP and min(i16["mean_shallow"], i16["mean_deep"]) >= REFUTE_FLOOR:
        out.update(verdict="refuted", reason=f"L{SHALLOW} is within {abs(i16['gap']):.3f} of L{DEEP} at k = 16, both >= {REFUTE_FLOOR}")
    else:
        missing = [f"gap at k = {k} is {v['gap']:.3f}" + ("" if v["gap"] >= CONFIRM_MARGIN else f" < {CONFIRM_MARGIN}")
                   + ("" if v["min_deep_seed"] > v["max_shallow_seed"] else " with overlapping seeds")
                   for k, v in inputs.items() if not ks_ok[k]]
        if not kstar_ok:
            missing.append(f"k*({SHALLOW}) = {out['k_star'][SHALLOW]} is not below k*({DEEP}) = {out['k_star'][DEEP]}")
        out.update(verdict="not decided", reason="; ".join(missing))
    overall = {dd: sum(e["mean"].values()) / len(e["mean"]) for dd, e in depths.items()}
    best = max(overall, key=overall.get)
    deepest = max(depths)
    out["mean_accuracy_over_k"] = overall
    out["diminishing_returns"] = (
        f"the deepest shape (L{deepest}, {overall[deepest]:.3f} mean over k) is below L{best} ({overall[best]:.3f})"
        if best != deepest and overall[best] - overall[deepest] > 0.01 else None)
    return out


# ---- the whole experiment ---------------------------------------------------------------------------


def run_experiment(setting: HopSetting, device="cpu", out_path: str | None = None, merge: bool = False,
                   log=print, meta: dict | None = None, started: float | None = None) -> list[dict]:
    """Train every (depth, seed) of the setting; return (and write, after every run) the records."""
    start = time.time() if started is None else started
    deadline = start + setting.deadline_s
    device = str(torch.device(device))
    shapes = {d: shape_of(setting, d) for d in setting.layers}
    previous: list[dict] = []
    if merge and out_path and os.path.isfile(out_path):
        previous = load_results(out_path)
        refusal = merge_refusal(out_path, previous, setting)
        if refusal:
            raise ValueError(refusal)
    planned = {(d, s) for d in setting.layers for s in setting.seeds}
    kept = [r for r in previous if r.get("record") == "train" and (r.get("n_layers"), r.get("seed")) not in planned]
    metas = [r for r in previous if r.get("record") == "meta"]
    this_meta = {"record": "meta", "setting": asdict(setting), "device": device, "device_name": device_name(device),
                 "torch": torch.__version__, "python": platform.python_version(),
                 "date": datetime.date.today().isoformat(), "budget": budget(setting),
                 "shapes": {d: s.name for d, s in shapes.items()}, **(meta or {})}
    records: list[dict] = metas + [this_meta] + kept

    def save():
        final = [r for r in records if r.get("record") != "verdict"]
        records[:] = final + [verdict(final)]
        if out_path:
            write_json_atomic(out_path, records)

    log(f"hop_depth on {device_name(device)}: budget {budget(setting):,} non-embedding parameters, "
        f"{setting.steps} steps x {setting.batch_size} sequences of {setting.n}, {setting.workers} runs at a time")
    for d, s in shapes.items():
        log(f"  L{d:<3d} {s.name:18s} params {s.non_embedding:,} ({s.budget_error:+.2%})")
    jobs = [(d, s) for s in setting.seeds for d in sorted(setting.layers, reverse=True)]  # slowest first
    concurrent_runs = min(setting.workers, len(jobs))

    def done(rec):
        tag = f"L{rec['n_layers']} seed {rec['seed']}"
        if "error" in rec or "incomplete" in rec:
            log(f"  {tag}: {rec.get('error') or rec.get('incomplete')}")
        else:
            acc = rec["accuracy_by_k"]
            log(f"  {tag}: acc k=0 {acc['0']:.3f} k=1 {acc['1']:.3f} k=4 {acc.get('4', float('nan')):.3f} "
                f"k=8 {acc.get('8', float('nan')):.3f} k=16 {acc.get('16', float('nan')):.3f}  "
                f"{rec['train_seconds']:.0f} s ({time.time() - start:.0f} s so far)")
        records.append(rec)
        save()

    run_side_by_side(_worker, [(setting, d, s, device, deadline, concurrent_runs) for d, s in jobs],
                     setting.workers, done)
    this_meta["total_seconds"] = time.time() - start
    save()
    v = records[-1]
    log(f"gate {'PASSED' if v['gate']['passed'] else 'FAILED'}; verdict: {v['verdict']} ({v['reason']})")
    return records


def main(argv=None) -> None:
    depth_experiment_main(argv, doc=__doc__, module="minids.experiments.hop_depth", out_stem="hop_k",
                          settings=SETTINGS, run_experiment=run_experiment)


if __name__ == "__main__":
    main()
