"""The practical reach of a sliding-window stack: how far does a TRAINED model carry information?

    python -m minids.experiments.window_reach --device cuda --out data/results     # one H200, ~2-3 minutes
    python -m minids.experiments.window_reach --setting tiny                         # seconds on a CPU

Theory (receptive_field.py, tested exactly): L layers of window W reach L (W - 1) positions, no further.
Mistral's "131K tokens" for 32 layers of W = 4096 is this bound. Whether training finds a model that USES the
whole span is another question, asked here on recall_d (data/recall.py): one value token among random filler,
every later position must name it; accuracy against the distance d, for L = 1, 2, 4, 8 layers of one small
window W = 8 (theoretical reach 7, 14, 28, 56) and seeds 0, 1, 2, scored out to d = 80, past every reach.
(Calibration on the CPU, seed 0, 64 sequences per step at d_model 64: W = 4 with L = 1 and 4, and W = 8 with
L = 4, each reached exactly L (W - 1) within 600 steps: accuracy 1.00 at d = L (W - 1), chance (0.04-0.07)
one position later.)
Chance (the value out of reach) is 1 / 16. The models are DeepSeek-shaped (pre-norm, RoPE, GQA 4/2 heads,
SwiGLU), all of one width, trained with the project's recipe (train.py) on the same stream for a given seed.

Decided before any result was looked at, and computed from the file by `verdict()`:

    gate      every run reaches mean accuracy >= 0.9 over d = 1 .. W - 1 (inside one window: one layer can copy
              the value directly); otherwise the training is wrong and the runs say nothing: UNDERTRAINED
    leak      every run's mean accuracy over d = L (W - 1) + 1 .. 80 is <= chance + 0.05; above it, information
              crossed the theoretical bound, so the setup (mask, data) is wrong: LEAK (never a finding)
    R(L)      practical reach: the largest d such that the seed-mean accuracy is >= 0.9 at every d' <= d
    verdict   "uses its span" if R(L) >= 0.9 L (W - 1) for every L; otherwise "falls short", naming the depths
              and their R(L) / L (W - 1)

On one GPU the runs go several at a time (--workers processes), as in hop_depth: these models are small,
one run alone leaves the H200 idle between kernel launches. Each record is written to the JSON file
(atomically) as soon as its run ends, with the verdict recomputed; a run that would pass --deadline-s stops
and is recorded as incomplete, not scored. --merge keeps a previous file's runs that this command does not
plan, so a run split in parts merges into one file.
"""

from __future__ import annotations

import datetime
import os
import platform
import time
import traceback
from dataclasses import asdict, dataclass

import torch

from ..data.recall import RecallTask
from ..results import write_json_atomic
from .side_by_side import depth_experiment_main, merge_refusal, run_side_by_side
from .depth_vs_width import binned, device_name, load_results, mean_std

GATE_ACCURACY = 0.9  # mean over d = 1 .. W - 1, every run
LEAK_MARGIN = 0.05  # beyond the theoretical reach: mean accuracy <= chance + this, every run
SOLVED = 0.9  # R(L): the largest d with seed-mean accuracy >= SOLVED at every d' <= d
USES_SPAN = 0.9  # "uses its span": R(L) >= USES_SPAN * L (W - 1) for every L


@dataclass(frozen=True)
class ReachSetting:
    window: int
    layers: tuple[int, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    n: int = 96  # positions per sequence
    max_distance: int = 80  # scored out to here, past the deepest reach
    n_fillers: int = 16
    n_values: int = 16
    d_model: int = 128
    n_heads: int = 4
    n_kv_heads: int = 2
    d_ff: int = 352  # ~2.75 d_model, DeepSeek's ratio
    batch_size: int = 512
    steps: int = 1000
    peak_lr: float = 3e-3
    warmup_steps: int = 100
    evals: int = 5  # points on the learning curve
    curve_size: int = 256  # held-out sequences at each curve point
    eval_size: int = 1024  # held-out sequences for the final accuracy (every d is scored in each)
    compile: bool = False  # torch.compile each layer (minids.fast.compile_model)
    workers: int = 1  # runs side by side
    deadline_s: float = 3600.0  # from the start of the command


SETTINGS: dict[str, ReachSetting] = {
    # One H200: all 12 runs at once (each its own process), 1,000 steps of 512 fresh sequences each. Tiny
    # models (0.2-1.5M parameters) are launch-bound: side by side they share the card, and a large batch
    # with fewer steps launches fewer kernels for the same sequences (13x the calibration runs' 38K).
    "cuda": ReachSetting(window=8, layers=(1, 2, 4, 8), workers=12, deadline_s=170.0),
    # The same question at half the size: W = 4 (reach 3, 6, 12), minutes on two CPU cores.
    "cpu": ReachSetting(window=4, layers=(1, 2, 4), n=48, max_distance=40, d_model=64, d_ff=176, batch_size=64,
                        steps=600, evals=3, curve_size=64, eval_size=256, workers=2),
    # The unit test's: seconds; it exercises the machinery and does not learn.
    "tiny": ReachSetting(window=4, layers=(1, 2), seeds=(0,), n=24, max_distance=16, n_values=4, n_fillers=4,
                         d_model=32, n_heads=2, n_kv_heads=1, d_ff=88, batch_size=16, steps=12, warmup_steps=2,
                         evals=2, curve_size=16, eval_size=32),
}


def task_of(setting: ReachSetting) -> RecallTask:
    return RecallTask(n=setting.n, max_distance=setting.max_distance, n_fillers=setting.n_fillers,
                      n_values=setting.n_values)


def config_of(setting: ReachSetting, n_layers: int):
    from ..config import ModelConfig

    return ModelConfig(vocab_size=task_of(setting).vocab_size, d_model=setting.d_model, n_layers=n_layers,
                       n_heads=setting.n_heads, n_kv_heads=setting.n_kv_heads, d_ff=setting.d_ff,
                       max_seq_len=setting.n, sliding_window=setting.window)


def practical_reach(accuracy_by_d: dict[int, float], threshold: float = SOLVED) -> int:
    """The largest d such that accuracy >= threshold at every d' = 1 .. d (0 if already d = 1 fails)."""
    reach = 0
    for d in sorted(accuracy_by_d):
        if d != reach + 1 or not accuracy_by_d[d] >= threshold:
            break
        reach = d
    return reach


# ---- one run --------------------------------------------------------------------------------------


class _Deadline(Exception):
    pass


def train_run(setting: ReachSetting, n_layers: int, seed: int, device: str, deadline: float | None = None,
              concurrent_runs: int = 1, log=None) -> dict:
    """Train one (depth, seed) and score it: the record for the results file. `deadline` is a time.time()."""
    from ..fast import compile_model
    from ..model import DeepSeekLM
    from ..receptive_field import theoretical_reach
    from ..train import TrainConfig, autocast_context, train

    device = torch.device(device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    task, cfg = task_of(setting), config_of(setting, n_layers)
    tag = f"L{n_layers} seed {seed}"
    torch.manual_seed(seed)  # the initial weights depend on the seed, as the data stream does
    model = DeepSeekLM(cfg, device=device)
    if setting.compile:
        compile_model(model)
    stream = task.batches(setting.batch_size, seed, device)

    def get_batch(step, generator):
        if deadline is not None and time.time() > deadline:
            raise _Deadline(step)
        return stream(step, generator)

    curve_set = task.eval_set(setting.curve_size, seed=10_000, device=device)
    final_set = task.eval_set(setting.eval_size, seed=20_000, device=device)

    run_start = time.time()

    def curve_point(m):
        result = task.evaluate(m, curve_set)
        reach = practical_reach(result["accuracy_by_d"])
        if log is not None:
            log(f"  {tag}: loss {result['loss']:.3f}, reach {reach} of {theoretical_reach(cfg)} "
                f"({time.time() - run_start:.0f} s)")
        return {"loss": result["loss"], "practical_reach": reach}

    config = TrainConfig(steps=setting.steps, batch_size=setting.batch_size, seq_len=setting.n,
                         peak_lr=setting.peak_lr, warmup_steps=min(setting.warmup_steps, setting.steps),
                         eval_every=max(1, setting.steps // setting.evals), seed=seed, device=str(device))
    base = {"record": "train", "task": "recall_d", "n_layers": n_layers, "window": setting.window, "seed": seed,
            "theoretical_reach": theoretical_reach(cfg), "d_model": cfg.d_model, "n_heads": cfg.n_heads,
            "n_kv_heads": cfg.n_kv_heads, "d_ff": cfg.d_ff, "parameters": model.num_parameters(),
            "chance": task.chance, "device": str(device), "device_name": device_name(device)}
    if log is not None:
        log(f"  {tag}: start ({model.num_parameters():,} parameters, W = {setting.window}, "
            f"reach {base['theoretical_reach']})")
    try:
        history = train(model, get_batch, config, eval_fn=curve_point, progress=False)
    except _Deadline as stop:
        return {**base, "incomplete": f"deadline at step {stop.args[0]} of {setting.steps}"}
    model.eval()
    with torch.no_grad(), autocast_context(device):
        final = task.evaluate(model, final_set)
    steps, losses = binned(history["losses"], bins=30)
    ds = sorted(final["accuracy_by_d"])
    return {
        **base, "steps": setting.steps, "batch_size": setting.batch_size, "seq_len": setting.n,
        "tokens": history["tokens"], "peak_lr": setting.peak_lr, "warmup_steps": setting.warmup_steps,
        "schedule": config.schedule,
        "d": ds, "accuracy": [final["accuracy_by_d"][d] for d in ds],  # held-out, eval_size sequences per d
        "practical_reach": practical_reach(final["accuracy_by_d"]), "final_loss": final["loss"],
        "eval_sequences": setting.eval_size,
        "curve": [{"step": e["step"], "loss": e["loss"], "practical_reach": e["practical_reach"]}
                  for e in history["evals"]],
        "train_curve": {"step": steps, "loss": losses},
        "tokens_per_s": history["tokens_per_s"], "train_seconds": history["train_seconds"],
        "concurrent_runs": concurrent_runs,  # tokens/s is per run, with this many runs sharing the device
    }


def _worker(args):
    setting, n_layers, seed, device, deadline, concurrent_runs = args
    try:
        return train_run(setting, n_layers, seed, device, deadline, concurrent_runs, log=lambda s: print(s, flush=True))
    except Exception as exc:  # noqa: BLE001: one failed run is recorded, the rest go on
        return {"record": "train", "task": "recall_d", "n_layers": n_layers, "seed": seed, "error": repr(exc),
                "traceback": traceback.format_exc()}


# ---- the verdict (fixed before running) -------------------------------------------------------------


def by_depth(records: list[dict]) -> dict[int, dict]:
    """Per depth: the complete runs, the window, the theoretical reach, and the seed-mean accuracy per d."""
    runs = [r for r in records if r.get("record") == "train" and r.get("task") == "recall_d" and "accuracy" in r]
    out: dict[int, dict] = {}
    for r in runs:
        out.setdefault(r["n_layers"], {"runs": []})["runs"].append(r)
    for depth, entry in out.items():
        first = entry["runs"][0]
        accs = {d: [dict(zip(r["d"], r["accuracy"]))[d] for r in entry["runs"]] for d in first["d"]}
        entry.update(seeds=sorted(r["seed"] for r in entry["runs"]), window=first["window"],
                     theoretical_reach=first["theoretical_reach"], chance=first["chance"],
                     mean={d: mean_std(v)[0] for d, v in accs.items()},
                     std={d: mean_std(v)[1] for d, v in accs.items()})
    return dict(sorted(out.items()))


def _run_means(r: dict) -> tuple[float, float | None]:
    """(mean accuracy over d = 1 .. W - 1, mean accuracy beyond the theoretical reach or None if none scored)."""
    acc = dict(zip(r["d"], r["accuracy"]))
    inside = [a for d, a in acc.items() if d <= r["window"] - 1]
    beyond = [a for d, a in acc.items() if d > r["theoretical_reach"]]
    return sum(inside) / len(inside), (sum(beyond) / len(beyond) if beyond else None)


def verdict(records: list[dict]) -> dict:
    """The gate, the leak check, R(L) and the verdict, from the records alone (rules in the module docstring)."""
    depths = by_depth(records)
    rules = {"gate": f"every run: mean accuracy >= {GATE_ACCURACY} over d = 1 .. W - 1",
             "leak": f"every run: mean accuracy over d > L (W - 1) <= chance + {LEAK_MARGIN}",
             "practical_reach": f"largest d with seed-mean accuracy >= {SOLVED} at every d' <= d",
             "uses its span": f"R(L) >= {USES_SPAN} x L (W - 1) for every L; else falls short"}
    runs = [r for e in depths.values() for r in e["runs"]]
    inputs = {f"L{r['n_layers']} seed {r['seed']}": dict(zip(("inside_window", "beyond_reach"), _run_means(r)))
              for r in runs}
    gate_passed = bool(runs) and all(v["inside_window"] >= GATE_ACCURACY for v in inputs.values())
    chance = runs[0]["chance"] if runs else None
    leaks = {k: v["beyond_reach"] for k, v in inputs.items()
             if v["beyond_reach"] is not None and v["beyond_reach"] > chance + LEAK_MARGIN}
    reach = {d: practical_reach(e["mean"]) for d, e in depths.items()}
    ratio = {d: reach[d] / e["theoretical_reach"] for d, e in depths.items()}
    out = {"record": "verdict", "rules": rules, "depths": sorted(depths),
           "seeds": {d: e["seeds"] for d, e in depths.items()},
           "gate": {"passed": gate_passed, "threshold": GATE_ACCURACY, "inputs": inputs},
           "leak": {"passed": not leaks, "margin": LEAK_MARGIN, "chance": chance, "failing": leaks},
           "theoretical_reach": {d: e["theoretical_reach"] for d, e in depths.items()},
           "practical_reach": reach, "reach_ratio": ratio}
    if not gate_passed:
        failing = [f"{k} ({v['inside_window']:.3f})" for k, v in inputs.items() if v["inside_window"] < GATE_ACCURACY]
        out.update(verdict="undertrained", reason=("no runs" if not runs else "gate failed: " + ", ".join(failing)
                   + f" below {GATE_ACCURACY} inside one window; the runs say nothing about reach"))
        return out
    if leaks:
        out.update(verdict="leak", reason="accuracy above chance beyond the theoretical reach: "
                   + ", ".join(f"{k} ({v:.3f})" for k, v in leaks.items()) + "; the setup is wrong")
        return out
    short = {d: r for d, r in ratio.items() if r < USES_SPAN}
    if not short:
        out.update(verdict="uses its span", reason="; ".join(
            f"L{d}: R = {reach[d]} of {depths[d]['theoretical_reach']}" for d in depths))
    else:
        out.update(verdict="falls short", reason="; ".join(
            f"L{d}: R = {reach[d]} of {depths[d]['theoretical_reach']} ({r:.2f})" for d, r in short.items()))
    return out


# ---- the whole experiment ---------------------------------------------------------------------------


def run_experiment(setting: ReachSetting, device="cpu", out_path: str | None = None, merge: bool = False,
                   log=print, meta: dict | None = None, started: float | None = None) -> list[dict]:
    """Train every (depth, seed) of the setting; return (and write, after every run) the records."""
    start = time.time() if started is None else started
    deadline = start + setting.deadline_s
    device = str(torch.device(device))
    previous: list[dict] = []
    if merge and out_path and os.path.isfile(out_path):
        previous = load_results(out_path)
        refusal = merge_refusal(out_path, previous, setting)
        if refusal:
            raise ValueError(refusal)
    planned = {(d, s) for d in setting.layers for s in setting.seeds}
    kept = [r for r in previous if r.get("record") == "train" and (r.get("n_layers"), r.get("seed")) not in planned]
    metas = [r for r in previous if r.get("record") == "meta"]
    task = task_of(setting)
    this_meta = {"record": "meta", "setting": asdict(setting), "device": device, "device_name": device_name(device),
                 "torch": torch.__version__, "python": platform.python_version(),
                 "date": datetime.date.today().isoformat(), "chance": task.chance, **(meta or {})}
    records: list[dict] = metas + [this_meta] + kept

    def save():
        final = [r for r in records if r.get("record") != "verdict"]
        records[:] = final + [verdict(final)]
        if out_path:
            write_json_atomic(out_path, records)

    log(f"window_reach on {device_name(device)}: W = {setting.window}, L in {setting.layers}, seeds {setting.seeds}, "
        f"{setting.steps} steps x {setting.batch_size} sequences of {setting.n}, d scored to {setting.max_distance}, "
        f"chance {task.chance:.4f}, {setting.workers} runs at a time, deadline {setting.deadline_s:.0f} s")
    jobs = [(d, s) for s in setting.seeds for d in sorted(setting.layers, reverse=True)]  # slowest first
    concurrent_runs = min(setting.workers, len(jobs))

    def done(rec):
        tag = f"L{rec['n_layers']} seed {rec['seed']}"
        if "error" in rec or "incomplete" in rec:
            log(f"  {tag}: {rec.get('error') or rec.get('incomplete')}")
        else:
            acc = dict(zip(rec["d"], rec["accuracy"]))
            shown = " ".join(f"d={d} {acc[d]:.2f}" for d in sorted({1, setting.window - 1, rec["theoretical_reach"],
                                                                   rec["theoretical_reach"] + 1, setting.max_distance})
                             if d in acc)
            log(f"  {tag}: R = {rec['practical_reach']} of {rec['theoretical_reach']}  {shown}  "
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
    depth_experiment_main(argv, doc=__doc__, module="minids.experiments.window_reach", out_stem="window_reach",
                          settings=SETTINGS, run_experiment=run_experiment)


if __name__ == "__main__":
    main()
