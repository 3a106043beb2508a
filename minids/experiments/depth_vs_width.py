"""Depth vs width, measured: parameter-matched shapes trained identically on two tasks, plus their cost.

    python -m minids.experiments.depth_vs_width                       # CPU default, a few minutes
    python -m minids.experiments.depth_vs_width --device cuda --out data/results   # one H200: corpus only, < 9 minutes

For every shape of one non-embedding budget (shapes.py: from shallow-and-wide to deep-and-narrow, along
d_ff as DeepSeek did and along d_model), every seed and every task, the same recipe (train.py: AdamW 0.9/0.95,
weight decay 0.1, clip 1.0, warm-up + multi-step schedule) trains for the same number of steps on the same
batches (the seed fixes the data stream; shapes that share a seed see identical batches). Tasks:

    khop    variable-binding chains, k = 1..6 look-ups (data/synthetic.py): accuracy per k on a fixed set
    corpus  byte-level language modelling of the stdlib docstrings (data/corpus.py): validation loss

Then, per shape, the forward latency (batch 1 prefill, and one decoding step with a KV cache: depth is
sequential, so latency follows n_layers even at equal FLOPs) and forward throughput.

Steps are sized from a short calibration so that the whole run fits its time budget (--budget-s); every
shape gets the same number of steps. Runs go seed by seed, so a deadline that cuts the run short still leaves
every shape with the same seeds. Each run and each latency measurement is caught separately: one failure is
recorded and the rest go on. The JSON file is rewritten (atomically) after every record.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field, replace

import torch

from ..data import KHopTask, corpus_manifest, corpus_tokens, lm_batches, lm_eval_windows
from ..shapes import Shape, budget_of, param_matched_family
from ..results import median_time, write_json_atomic
from .cli import check_out, nonnegative_float, positive_float, positive_int
from ..train import TrainConfig, lm_loss, train

TASKS = ("khop", "corpus")


@dataclass(frozen=True)
class Setting:
    """Everything that defines one experiment size."""

    d_model: int  # the reference shape: d_model x reference_layers with d_ff = reference_d_ff
    reference_layers: int
    reference_d_ff: int
    head_dim: int
    kv_ratio: int
    layers: tuple[int, ...]  # depths along the d_ff axis (fixed d_model)
    widths: tuple[int, ...] = ()  # other d_models (d_model axis)
    multiple_of: int = 8  # d_ff granularity
    seeds: tuple[int, ...] = (0, 1, 2)
    tasks: tuple[str, ...] = TASKS
    max_hops: int = 6  # k-hop chains k = 1..max_hops in every example (fewer chains: fewer distractors)
    task_share: dict = field(default_factory=lambda: {"khop": 0.5, "corpus": 0.5})  # of budget_s, per task
    batch_size: dict = field(default_factory=lambda: {"khop": 32, "corpus": 16})
    corpus_seq_len: int = 64
    peak_lr: float = 3e-3
    warmup_fraction: float = 0.05
    budget_s: float = 150.0  # training time to fill (steps are calibrated to it)
    min_steps: int = 50
    max_steps: int = 2000
    steps: int | None = None  # fixed steps: skip calibration
    evals: int = 10  # evaluations per run (the curves' points)
    khop_eval_examples: int = 256
    corpus_eval_windows: int = 64
    latency_seq_len: int = 64
    latency_repeats: int = 5
    throughput_batch: int = 16
    deadline_s: float = 300.0  # hard stop for the whole command: runs that would end later are skipped
    compile: bool = False  # torch.compile each layer (minids.fast.compile_model) for training


SETTINGS: dict[str, Setting] = {
    # The CPU default: width 64, ~185k non-embedding parameters, 3 depths, 3 seeds, 2 tasks.
    "cpu": Setting(
        d_model=64, reference_layers=4, reference_d_ff=176, head_dim=16, kv_ratio=2, layers=(2, 4, 8),
        batch_size={"khop": 16, "corpus": 16}, min_steps=40, evals=5, khop_eval_examples=192, corpus_eval_windows=32,
    ),
    # One H200: width 256, ~5.8M non-embedding parameters, 4 depths along d_ff. A step of these models is
    # bound by kernel-launch overhead (v1 run: ~2.7 ms per layer per step at 13.6k tokens), so the batches
    # are 4-8x larger at almost no cost per step, k-hop gets 3/4 of the time (it needs many more examples
    # than the corpus to leave its baseline), and the chains stop at k = 4 (10 statements instead of 21:
    # learnable within the budget, see data/README.md). The d_model axis is left to the CPU setting here.
    # One H200: the language-modelling half, trained until the validation loss stops improving. Width 256,
    # ~5.8M non-embedding parameters (the budget of chapter 06's hop_k family), 4 depths along d_ff, compiled.
    # 1,500 steps of 256 x 128 bytes = 49M tokens, ~34 passes over the 1.44 MB corpus: far past the best
    # validation loss, which is what each run reports (best_loss, best_step, plateaued). The k-hop half of
    # this experiment is now hop_k (minids.experiments.hop_depth), which the models actually learn.
    "cuda": Setting(
        d_model=256, reference_layers=8, reference_d_ff=688, head_dim=32, kv_ratio=2, layers=(2, 4, 8, 16),
        tasks=("corpus",), batch_size={"khop": 1024, "corpus": 256}, corpus_seq_len=128, peak_lr=2e-3,
        task_share={"corpus": 1.0}, steps=1500, evals=30, corpus_eval_windows=1024, latency_seq_len=128,
        latency_repeats=20, throughput_batch=128, deadline_s=560.0, compile=True,
    ),
    # The chapter's live part: seconds on a laptop CPU.
    "tiny": Setting(
        d_model=32, reference_layers=2, reference_d_ff=88, head_dim=16, kv_ratio=2, layers=(1, 2, 4), multiple_of=4, seeds=(0,),
        batch_size={"khop": 16, "corpus": 16}, corpus_seq_len=32, steps=60, evals=4, khop_eval_examples=128,
        corpus_eval_windows=32, latency_seq_len=32, latency_repeats=3, throughput_batch=8, deadline_s=60.0,
    ),
}


def setting_shapes(setting: Setting) -> list[Shape]:
    budget = budget_of(setting.d_model, setting.reference_layers, setting.reference_d_ff, setting.head_dim,
                       setting.kv_ratio)
    return param_matched_family(budget, setting.d_model, setting.layers, setting.widths, head_dim=setting.head_dim,
                                kv_ratio=setting.kv_ratio, multiple_of=setting.multiple_of,
                                max_seq_len=max(512, setting.corpus_seq_len + 1))


# ---- tasks ---------------------------------------------------------------------------------------------


class _Task:
    """get_batch and eval_fn of one task, built once per experiment."""

    def __init__(self, name: str, setting: Setting):
        self.name = name
        self.batch_size = setting.batch_size[name]
        self.stream = None  # ((seed, steps), get_batch) of pre-generated batches for the current seed
        if name == "khop":
            self.khop = KHopTask(max_hops=setting.max_hops)
            self.seq_len = self.khop.seq_len
            self.get_batch = self.khop.batches(self.batch_size)
            self.eval_set = self.khop.eval_set(setting.khop_eval_examples)
            self.baseline = self.khop.context_digit_baseline(self.eval_set)
        elif name == "corpus":
            self.seq_len = setting.corpus_seq_len
            self.get_batch = lm_batches(corpus_tokens("train"), self.batch_size, self.seq_len)
            self.eval_set = lm_eval_windows(corpus_tokens("val"), setting.corpus_eval_windows, self.seq_len)
            self.baseline = None
        else:
            raise ValueError(f"unknown task {name!r}; choose from {TASKS}")

    def evaluate(self, model) -> dict:
        if self.name == "khop":
            return self.khop.accuracy(model, self.eval_set)
        inputs, targets = self.eval_set
        device = next(model.parameters()).device
        losses = [lm_loss(model(x.to(device)), y.to(device)).item() for x, y in zip(inputs.split(64), targets.split(64))]
        sizes = [len(x) for x in inputs.split(64)]
        return {"loss": sum(l * n for l, n in zip(losses, sizes)) / sum(sizes)}


# ---- one run -------------------------------------------------------------------------------------------


def pregenerated(get_batch, steps: int, seed: int, device):
    """The exact stream train() would draw (its generator is seeded with `seed` and called once per step),
    made up front and moved to the device in one copy: per step, only an index remains on the critical path
    (no CPU sampling, no host-to-device copy). Shapes that share a seed reuse it."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    inputs, targets = zip(*(get_batch(step, generator) for step in range(steps)))
    inputs, targets = torch.stack(inputs).to(device), torch.stack(targets).to(device)

    def get(step: int, _generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return inputs[step], targets[step]

    return get


def _build(shape: Shape, seed: int, device, compile: bool = False):
    from ..fast import compile_model
    from ..model import DeepSeekLM

    torch.manual_seed(seed)  # the initial weights depend on the seed, as the data stream does
    model = DeepSeekLM(shape.config, device=device)
    return compile_model(model) if compile else model


def _train_config(setting: Setting, task: _Task, steps: int, seed: int, device) -> TrainConfig:
    return TrainConfig(
        steps=steps, batch_size=task.batch_size, seq_len=task.seq_len, peak_lr=setting.peak_lr,
        warmup_steps=max(1, round(setting.warmup_fraction * steps)), eval_every=max(1, steps // setting.evals),
        seed=seed, device=str(device),
    )


def binned(values: list[float], bins: int = 50) -> tuple[list[int], list[float]]:
    """Mean train loss over `bins` equal stretches of steps (keeps the JSON small): (last step, mean)."""
    n = len(values)
    edges = [round(i * n / bins) for i in range(bins + 1)]
    steps, means = [], []
    for a, b in zip(edges, edges[1:]):
        if b > a:
            steps.append(b)
            means.append(sum(values[a:b]) / (b - a))
    return steps, means


def train_one(setting: Setting, shape: Shape, task: _Task, seed: int, steps: int, device) -> dict:
    model = _build(shape, seed, device, setting.compile)
    config = _train_config(setting, task, steps, seed, device)
    stream = task.stream if task.stream is not None and task.stream[0] == (seed, steps) else None
    history = train(model, stream[1] if stream else task.get_batch, config, eval_fn=task.evaluate, progress=False)
    final = history["evals"][-1]
    best = min(history["evals"], key=lambda e: e["loss"])
    curve_steps, curve_loss = binned(history["losses"])
    tail = history["losses"][-max(1, steps // 20):]
    cfg = shape.config
    record = {
        "record": "train", "task": task.name, "shape": shape.name, "axis": shape.axis,
        "n_layers": cfg.n_layers, "d_model": cfg.d_model, "d_ff": cfg.d_ff, "n_heads": cfg.n_heads,
        "n_kv_heads": cfg.n_kv_heads, "non_embedding_params": shape.non_embedding, "budget": shape.budget,
        "seed": seed, "steps": steps, "batch_size": task.batch_size, "seq_len": task.seq_len,
        "tokens": history["tokens"], "max_hops": task.khop.max_hops if task.name == "khop" else None, "peak_lr": config.peak_lr, "warmup_steps": config.warmup_steps,
        "schedule": config.schedule,
        "final_loss": final["loss"],  # held-out: the k-hop evaluation set / the corpus validation split
        # The best held-out loss over the evaluations (early stopping's choice, not an overfitted last one),
        # and whether training went past it: "plateaued" when no evaluation in the last fifth improved on it.
        "best_loss": best["loss"], "best_step": best["step"], "plateaued": best["step"] <= 0.8 * steps,
        "final_train_loss": sum(tail) / len(tail),
        "accuracy": {str(k): final[f"acc_k{k}"] for k in range(1, task.khop.max_hops + 1)} if task.name == "khop" else None,
        "accuracy_mean": final.get("acc"), "baseline_accuracy": task.baseline,
        "tokens_per_s": history["tokens_per_s"], "train_seconds": history["train_seconds"],
        "device": str(device), "device_name": device_name(device),
        "curve": {"step": curve_steps, "train_loss": curve_loss},
        "evals": history["evals"],
    }
    return record


# ---- cost: latency and throughput ----------------------------------------------------------------------


@torch.no_grad()
def measure_latency(setting: Setting, shape: Shape, device) -> dict:
    """Median forward latencies of one shape: batch-1 prefill, one decoding step, and batched throughput."""
    from ..model import DeepSeekLM

    device = torch.device(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    model = DeepSeekLM(shape.config, device="meta").materialize(device, dtype).eval()
    t = setting.latency_seq_len
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, shape.config.vocab_size, (1, t), generator=gen).to(device)
    batch = torch.randint(0, shape.config.vocab_size, (setting.throughput_batch, t), generator=gen).to(device)
    reps = setting.latency_repeats
    prefill = median_time(lambda: model(prompt, validate=False), device, 2, reps)
    cache = model.new_kv_cache(1, t + 1)
    model(prompt[:, :-1], kv_cache=cache, validate=False)  # fill t - 1 positions, then time the last token

    def decode_step():
        cache.length = t - 1
        model(prompt[:, -1:], kv_cache=cache, validate=False)

    decode = median_time(decode_step, device, 2, reps)
    batched = median_time(lambda: model(batch, validate=False), device, 1, max(3, reps // 2))
    cfg = shape.config
    return {
        "record": "latency", "shape": shape.name, "axis": shape.axis, "n_layers": cfg.n_layers,
        "d_model": cfg.d_model, "d_ff": cfg.d_ff, "n_heads": cfg.n_heads, "n_kv_heads": cfg.n_kv_heads,
        "non_embedding_params": shape.non_embedding, "seq_len": t, "dtype": str(dtype).replace("torch.", ""),
        "prefill_ms": prefill * 1e3, "decode_ms_per_token": decode * 1e3,
        "forward_batch": setting.throughput_batch, "forward_tokens_per_s": setting.throughput_batch * t / batched,
        "device": str(device), "device_name": device_name(device),
    }


# ---- the whole experiment ------------------------------------------------------------------------------


def device_name(device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def calibrate(setting: Setting, shapes, tasks, device, log) -> dict:
    """Seconds per training step for each (shape, task), from a few timed steps after a warm-up."""
    per_step = {}
    for task in tasks.values():
        for shape in shapes:
            model = _build(shape, 0, device)
            train(model, task.get_batch, _train_config(setting, task, 3, 0, device), progress=False)  # warm-up
            n = 8
            history = train(model, task.get_batch, _train_config(setting, task, n, 0, device), progress=False)
            per_step[(shape.name, task.name)] = history["train_seconds"] / n
            log(f"  calibrate {task.name:6s} {shape.name:18s} {1e3 * per_step[(shape.name, task.name)]:7.1f} ms/step")
    return per_step


def choose_steps(setting: Setting, per_step: dict, n_seeds: int, task: str | None = None,
                 eval_overhead: float = 1.15) -> int:
    """Steps per run of `task` (all tasks if None) that fill its share of budget_s: every shape of a task
    gets the same steps."""
    if task is None:
        seconds, share = sum(per_step.values()), 1.0
    else:
        seconds = sum(v for (_, t), v in per_step.items() if t == task)
        share = setting.task_share.get(task, 0.0) / sum(setting.task_share.get(t, 0.0) for t in setting.tasks)
    seconds_per_step_all = seconds * n_seeds * eval_overhead
    steps = int(share * setting.budget_s / seconds_per_step_all)
    steps = max(setting.min_steps, min(setting.max_steps, steps))
    return steps // 10 * 10 if steps >= 100 else steps


def run_experiment(setting: Setting, device="cpu", out_path: str | None = None, log=print, meta: dict | None = None,
                   started: float | None = None) -> list[dict]:
    """Train every (seed, task, shape), measure every shape's latency; return (and write) the records.

    The deadline counts from `started` (a time.perf_counter() value; default: now)."""
    start = time.perf_counter() if started is None else started
    device = torch.device(device)
    shapes = setting_shapes(setting)
    records: list[dict] = [{
        "record": "meta", "setting": asdict(setting), "device": str(device), "device_name": device_name(device),
        "torch": torch.__version__, "python": platform.python_version(),
        "corpus_python": corpus_manifest()["python"], "date": datetime.date.today().isoformat(),
        "shapes": [s.name for s in shapes], **(meta or {}),
    }]

    def save():
        if out_path:
            write_json_atomic(out_path, records)

    log(f"depth_vs_width on {device_name(device)}: {len(shapes)} shapes, budget {shapes[0].budget:,} "
        f"non-embedding parameters")
    for s in shapes:
        log(f"  {s.name:18s} axis {s.axis:7s} heads {s.config.n_heads}/{s.config.n_kv_heads} "
            f"params {s.non_embedding:,} ({s.budget_error:+.2%})")
    tasks = {name: _Task(name, setting) for name in setting.tasks}

    for shape in shapes:  # latency first: cheap, and independent of training
        try:
            rec = measure_latency(setting, shape, device)
            log(f"  latency {shape.name:18s} prefill {rec['prefill_ms']:.2f} ms, decode {rec['decode_ms_per_token']:.2f}"
                f" ms/token, forward {rec['forward_tokens_per_s']:,.0f} tok/s")
        except Exception as exc:  # noqa: BLE001: record and go on
            rec = {"record": "latency", "shape": shape.name, "error": repr(exc), "traceback": traceback.format_exc()}
            log(f"  latency {shape.name} FAILED: {exc!r}")
        records.append(rec)
        save()

    if setting.steps is not None:
        steps, per_step = {t: setting.steps for t in tasks}, None
    else:
        per_step = calibrate(setting, shapes, tasks, device, log)
        steps = {t: choose_steps(setting, per_step, len(setting.seeds), t) for t in tasks}
    records[0]["steps"] = max(steps.values())
    records[0]["steps_per_task"] = steps
    log(f"training {len(setting.seeds)} seeds x {len(tasks)} tasks x {len(shapes)} shapes, steps per run: "
        + ", ".join(f"{t} {n}" for t, n in steps.items()) + f" ({time.perf_counter() - start:.0f} s so far)")

    for seed in setting.seeds:  # seed-major: a deadline cut leaves every shape with the same seeds
        for task in tasks.values():
            task.stream = None
            try:
                task.stream = ((seed, steps[task.name]), pregenerated(task.get_batch, steps[task.name], seed, device))
            except Exception as exc:  # noqa: BLE001: fall back to drawing each batch in the loop
                log(f"  pre-generating {task.name} batches FAILED ({exc!r}); drawing them per step")
            for shape in shapes:
                elapsed = time.perf_counter() - start
                expected = per_step[(shape.name, task.name)] * steps[task.name] * 1.15 if per_step else 0.0
                tag = f"seed {seed} {task.name:6s} {shape.name:18s}"
                if elapsed + expected > setting.deadline_s:
                    log(f"  {tag} SKIPPED: {elapsed:.0f} s + ~{expected:.0f} s would pass the {setting.deadline_s:.0f} s deadline")
                    records.append({"record": "train", "task": task.name, "shape": shape.name, "seed": seed,
                                    "skipped": "deadline"})
                    continue
                try:
                    rec = train_one(setting, shape, task, seed, steps[task.name], device)
                    acc = f" acc {rec['accuracy_mean']:.3f}" if rec["accuracy"] else ""
                    log(f"  {tag} loss {rec['final_loss']:.4f}{acc}  {rec['tokens_per_s']:,.0f} tok/s "
                        f"({rec['train_seconds']:.1f} s)")
                except Exception as exc:  # noqa: BLE001
                    rec = {"record": "train", "task": task.name, "shape": shape.name, "seed": seed,
                           "error": repr(exc), "traceback": traceback.format_exc()}
                    log(f"  {tag} FAILED: {exc!r}")
                records.append(rec)
                save()
            task.stream = None  # frees the device memory before the next task's batches
    records[0]["total_seconds"] = time.perf_counter() - start
    save()
    log(f"done in {records[0]['total_seconds']:.0f} s" + (f"; wrote {out_path}" if out_path else ""))
    return records


def load_results(path: str):
    """A results file's JSON (a damaged file is named, with what is wrong: files.read_json)."""
    from ..files import read_json

    return read_json(path, what="results file")


def main(argv=None) -> None:
    started = time.perf_counter()  # the deadline counts from here, argument parsing and CUDA start-up included
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--setting", choices=sorted(SETTINGS), help="size preset (default: the device's type)")
    parser.add_argument("--out", default="data/results", help="folder for depth_vs_width_<device>.json")
    parser.add_argument("--steps", type=positive_int, help="fixed steps per run (skips calibration)")
    parser.add_argument("--seeds", type=positive_int, help="number of seeds (default: the setting's)")
    parser.add_argument("--budget-s", type=positive_float, help="training seconds to fill (default: the setting's)")
    parser.add_argument("--deadline-s", type=nonnegative_float, help="hard stop in seconds (default: the setting's)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test of the setting: 1 seed, 2 steps, tiny evaluation and latency sets")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="CPU threads (default 1: tiny models gain little from more, and shared CPUs lose a lot)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    setting = SETTINGS[args.setting or ("cuda" if device.type == "cuda" else "cpu")]
    changes = {}
    if args.steps is not None:
        changes["steps"] = args.steps
    if args.seeds is not None:
        changes["seeds"] = tuple(range(args.seeds))
    if args.budget_s is not None:
        changes["budget_s"] = args.budget_s
    if args.deadline_s is not None:
        changes["deadline_s"] = args.deadline_s
    if args.quick:  # the smoke test's sizes, under any that the command line gives (--quick --steps 3)
        changes = {**dict(seeds=(0,), steps=2, evals=1, khop_eval_examples=8, corpus_eval_windows=4,
                          latency_repeats=1, throughput_batch=2), **changes}
    setting = replace(setting, **changes)
    out_path = os.path.join(args.out, f"depth_vs_width_{device.type}.json")
    check_out(parser, out_path)  # before any work: a bad --out never costs a run
    command = " ".join(["python -m minids.experiments.depth_vs_width"] + [shlex.quote(a) for a in sys.argv[1:]])
    run_experiment(setting, device, out_path, log=lambda s: print(s, flush=True), meta={"command": command},
                   started=started)


if __name__ == "__main__":
    main()


# ---- reading the results (chapter 06) ------------------------------------------------------------------


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value): the seed spread the chapters report."""
    m = sum(values) / len(values)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, s


def summarize(records: list[dict]) -> dict:
    """Per task and shape: seeds, mean/std of final_loss, accuracy per k (mean, std), tokens/s; and per shape
    the latency record. Failed and skipped runs are counted, not averaged.

    Returns {"tasks": {task: {shape: {...}}}, "latency": {shape: record}, "shapes": [names, shallow first],
             "failed": n, "skipped": n}.
    """
    runs = [r for r in records if r.get("record") == "train"]
    good = [r for r in runs if "error" not in r and "skipped" not in r]
    order = sorted({(r["n_layers"], r["d_model"], r["shape"]) for r in good})
    out = {"tasks": {}, "latency": {}, "shapes": [name for _, _, name in order],
           "failed": sum("error" in r for r in runs), "skipped": sum("skipped" in r for r in runs)}
    for r in good:
        out["tasks"].setdefault(r["task"], {}).setdefault(r["shape"], []).append(r)
    for task, by_shape in out["tasks"].items():
        for shape, rs in by_shape.items():
            loss_m, loss_s = mean_std([r["final_loss"] for r in rs])
            entry = {"n_layers": rs[0]["n_layers"], "d_model": rs[0]["d_model"], "d_ff": rs[0]["d_ff"],
                     "axis": rs[0]["axis"], "seeds": len(rs), "loss_mean": loss_m, "loss_std": loss_s,
                     "plateaued": all(r.get("plateaued", False) for r in rs),
                     "tokens_per_s": sum(r["tokens_per_s"] for r in rs) / len(rs), "runs": rs}
            if all("best_loss" in r for r in rs):
                entry["best_mean"], entry["best_std"] = mean_std([r["best_loss"] for r in rs])
            if rs[0]["accuracy"]:
                ks = sorted(rs[0]["accuracy"], key=int)
                entry["acc_mean"] = {k: mean_std([r["accuracy"][k] for r in rs])[0] for k in ks}
                entry["acc_std"] = {k: mean_std([r["accuracy"][k] for r in rs])[1] for k in ks}
            by_shape[shape] = entry
    for r in records:
        if r.get("record") == "latency" and "error" not in r:
            out["latency"][r["shape"]] = r
    return out
