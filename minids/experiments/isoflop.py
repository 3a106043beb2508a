"""A toy IsoFLOP profile: at a fixed compute budget C, which model size reaches the lowest loss?

The paper (section 3.2) fits its allocation law M_opt = 0.1715 * C**0.5243 from IsoFLOP profiles: at each
budget C it trains models of several sizes M, each on D = C / M tokens, and keeps the size with the lowest
loss. This module does the same on the project's own corpus (the standard library's docstrings, byte tokens),
with the project's own training loop (`minids.train.train`) and models (`DeepSeekLM`):

    for each budget C:
        batch size and peak lr from the paper's Eq. 1 at C (extrapolated far below its fitted range)
        for each shape in the grid:
            M = real_flops_per_token(shape)          non-embedding training FLOPs per token
            D = C / M tokens, rounded to whole steps  (the JSON records the C actually spent)
            train with the paper's recipe (AdamW, multi-step schedule), then the validation loss

Shapes whose run would be too short (fewer than `min_steps` steps) or would repeat the corpus too often
(more than `max_epochs` passes) are skipped and recorded as skipped, with the reason.

    python -m minids.experiments.isoflop                      # CPU: 3 budgets, a few minutes -> isoflop_cpu.json
    python -m minids.experiments.isoflop --device cuda        # bigger budgets and models -> isoflop_cuda.json
    python -m minids.experiments.isoflop --quick --out /tmp   # seconds: a smoke test of the whole path

Each run is caught separately: one failure is recorded and the others go on. `--max-minutes` bounds the total
time; runs that would start after it are recorded as skipped. The output JSON is written atomically after
every run, so an interrupted experiment keeps what it measured.

What a toy can say: the budgets here are 5-7 orders of magnitude below the paper's smallest (1e17 FLOPs), the
models are a few hundred thousand parameters, one seed, byte tokens. It shows the method and the U-shaped
profile, not the paper's exponent.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import sys
import time
import traceback
from dataclasses import asdict, dataclass

import torch

from ..config import ModelConfig
from ..data import corpus_tokens, lm_batches, lm_eval_windows
from ..model import DeepSeekLM
from ..scaling import optimal_allocation, optimal_batch_tokens, optimal_lr, real_flops_per_token
from ..results import write_json_atomic
from .cli import check_out, nonnegative_int, positive_float, positive_int
from ..train import TrainConfig, lm_loss, train

# (n_layers, d_model, n_heads): head_dim 16 (8 for the smallest), MHA like the 7B, d_ff = 8/3 d_model
# rounded up to 16. The widths double roughly every step, so M grows about 2-3x from one shape to the next.
CPU_SHAPES = ((1, 8, 1), (1, 16, 1), (1, 32, 2), (2, 32, 2), (2, 48, 3), (2, 64, 4), (3, 96, 6))
GPU_SHAPES = CPU_SHAPES + ((4, 128, 8), (6, 192, 12), (8, 256, 16))
PRESETS = {
    "cpu": dict(budgets=(1e10, 3e10, 1e11), shapes=CPU_SHAPES, seeds=(0,), seq_len=128, n_val_windows=64),
    "cuda": dict(budgets=(1e11, 3e11, 1e12, 3e12), shapes=GPU_SHAPES, seeds=(0, 1, 2), seq_len=128,
                 n_val_windows=256),
    "quick": dict(budgets=(1e8, 2e8), shapes=CPU_SHAPES[:2], seeds=(0,), seq_len=32, n_val_windows=8),
}


def toy_config(n_layers: int, d_model: int, n_heads: int, seq_len: int) -> ModelConfig:
    """A DeepSeek-shaped toy: byte vocabulary (256), MHA, SwiGLU with d_ff = 8/3 d_model rounded up to 16."""
    d_ff = 16 * math.ceil(8 * d_model / 3 / 16)
    return ModelConfig(vocab_size=256, d_model=d_model, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_heads,
                       d_ff=d_ff, max_seq_len=seq_len)


@dataclass(frozen=True)
class PlannedRun:
    budget: float  # C asked for
    name: str  # "L2-d64"
    n_layers: int
    d_model: int
    n_heads: int
    M: int  # real non-embedding training FLOPs per token at seq_len
    params: int  # non-embedding parameters (for the reader; the profile is in M)
    batch_size: int  # sequences
    seq_len: int
    steps: int
    tokens: int  # D actually trained: steps * batch_size * seq_len
    C_spent: float  # M * tokens (differs from budget by the rounding to whole steps)
    peak_lr: float
    warmup_steps: int
    epochs: float  # passes over the training split
    skip: str | None  # why this run is not trained, or None


def plan_runs(budgets, shapes, seq_len: int, train_tokens: int, min_steps: int = 40, max_epochs: float = 4.0,
              lr: float | None = None) -> list[PlannedRun]:
    """Every (budget, shape) pair with its batch, steps and lr; the ones that cannot be run well are marked skip."""
    from ..accounting import count_params

    if train_tokens <= 0:
        raise ValueError(f"train_tokens must be positive, got {train_tokens}")
    plans = []
    for C in budgets:
        batch_size = max(1, round(optimal_batch_tokens(C) / seq_len))  # Eq. 1 in sequences
        peak_lr = optimal_lr(C) if lr is None else lr
        for n_layers, d_model, n_heads in shapes:
            cfg = toy_config(n_layers, d_model, n_heads, seq_len)
            M = real_flops_per_token(cfg, seq_len)
            steps = round(C / M / (batch_size * seq_len))
            tokens = steps * batch_size * seq_len
            epochs = tokens / train_tokens
            skip = None
            if steps < min_steps:
                skip = f"{steps} steps < min_steps {min_steps}: the model is too big for this budget"
            elif epochs > max_epochs:
                skip = f"{epochs:.1f} passes over the corpus > max_epochs {max_epochs}: too small for this budget"
            plans.append(PlannedRun(
                budget=float(C), name=f"L{n_layers}-d{d_model}", n_layers=n_layers, d_model=d_model,
                n_heads=n_heads, M=M, params=count_params(cfg).non_embedding, batch_size=batch_size,
                seq_len=seq_len, steps=steps, tokens=tokens, C_spent=float(M * tokens), peak_lr=float(peak_lr),
                warmup_steps=max(1, steps // 20), epochs=epochs, skip=skip,
            ))
    return plans


def run_one(plan: PlannedRun, train_ids: torch.Tensor, val: tuple[torch.Tensor, torch.Tensor], device: str,
            seed: int = 0, progress: bool = False) -> dict:
    """Train one planned model with minids.train and return its losses and timings."""
    cfg = toy_config(plan.n_layers, plan.d_model, plan.n_heads, plan.seq_len)
    torch.manual_seed(seed)
    model = DeepSeekLM(cfg, device="cpu")  # initialised on the CPU, so the same seed gives the same weights anywhere
    config = TrainConfig(steps=plan.steps, batch_size=plan.batch_size, seq_len=plan.seq_len, peak_lr=plan.peak_lr,
                         warmup_steps=plan.warmup_steps, seed=seed, schedule="multistep", device=device)
    val_inputs, val_targets = val

    def evaluate(m: torch.nn.Module) -> dict:
        losses = []
        for i in range(0, len(val_inputs), 32):
            x, y = val_inputs[i:i + 32].to(device), val_targets[i:i + 32].to(device)
            losses.append(lm_loss(m(x), y).float() * len(x))
        return {"val_loss": (torch.stack(losses).sum() / len(val_inputs)).item()}

    tic = time.perf_counter()
    history = train(model, lm_batches(train_ids, plan.batch_size, plan.seq_len), config, eval_fn=evaluate,
                    progress=progress)
    tail = history["losses"][-max(1, plan.steps // 20):]
    return {
        "val_loss": history["evals"][-1]["val_loss"],
        "train_loss": sum(tail) / len(tail),  # mean over the last 5% of steps
        "seconds": time.perf_counter() - tic,
        "tokens_per_s": history["tokens_per_s"],
        "finite": all(math.isfinite(x) for x in history["losses"]),
    }


def _device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def profiles(result: dict) -> dict[float, list[dict]]:
    """{budget: [one entry per shape trained: name, M, tokens, val_loss (mean over seeds), val_losses]}, by M."""
    groups: dict[tuple[float, str], list[dict]] = {}
    for run in result["runs"]:
        if run.get("val_loss") is not None and math.isfinite(run["val_loss"]):
            groups.setdefault((run["budget"], run["name"]), []).append(run)
    out: dict[float, list[dict]] = {}
    for (budget, name), runs in groups.items():
        losses = [r["val_loss"] for r in runs]
        out.setdefault(budget, []).append({"name": name, "M": runs[0]["M"], "tokens": runs[0]["tokens"],
                                           "val_loss": sum(losses) / len(losses), "val_losses": losses})
    return {b: sorted(v, key=lambda e: e["M"]) for b, v in sorted(out.items())}


def best_per_budget(result: dict) -> dict[float, dict]:
    """The loss-optimal shape of each budget (lowest validation loss, averaged over seeds): {budget: entry}."""
    return {b: min(entries, key=lambda e: e["val_loss"]) for b, entries in profiles(result).items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--quick", action="store_true", help="tiny budgets and models: a smoke test in seconds")
    parser.add_argument("--out", default="data/results", help="folder for isoflop_<preset>.json")
    parser.add_argument("--budgets", type=positive_float, nargs="+",
                        help="compute budgets in FLOPs (default: the preset's)")
    parser.add_argument("--lr", type=positive_float, help="one peak lr for every run instead of Eq. 1's eta_opt(C)")
    parser.add_argument("--seeds", type=nonnegative_int, nargs="+",
                        help="seeds per (budget, shape) (default: the preset's)")
    parser.add_argument("--min-steps", type=positive_int, default=40)
    parser.add_argument("--max-epochs", type=positive_float, default=4.0)
    parser.add_argument("--max-minutes", type=positive_float,
                        help="no run starts after this much time (default: 7 on cuda, 30 on the CPU)")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="CPU threads for torch (default 1: these models are too small to gain from more)")
    parser.add_argument("--progress", action="store_true", help="a tqdm bar per run")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    preset_name = "quick" if args.quick else ("cuda" if torch.device(args.device).type == "cuda" else "cpu")
    check_out(parser, os.path.join(args.out, f"isoflop_{preset_name}.json"))  # before any work
    threads = torch.get_num_threads()
    if torch.device(args.device).type == "cpu":
        torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)  # main() may be called from other code (the tests): leave it as it was


def _run(args: argparse.Namespace) -> dict:
    preset_name = "quick" if args.quick else ("cuda" if torch.device(args.device).type == "cuda" else "cpu")
    preset = PRESETS[preset_name]
    if args.max_minutes is None:
        args.max_minutes = 7.0 if preset_name == "cuda" else 30.0
    budgets = tuple(args.budgets) if args.budgets else preset["budgets"]
    seeds = tuple(args.seeds) if args.seeds else preset["seeds"]
    seq_len = preset["seq_len"]
    train_ids, val_ids = corpus_tokens("train"), corpus_tokens("val")
    val = lm_eval_windows(val_ids, preset["n_val_windows"], seq_len)
    plans = plan_runs(budgets, preset["shapes"], seq_len, train_ids.numel(), args.min_steps, args.max_epochs, args.lr)
    # Seed-major order: every budget and shape gets its first seed before any gets a second, so a time limit
    # cuts repeats, not whole budgets.
    jobs = [(seed, plan) for seed in seeds for plan in plans]

    path = os.path.join(args.out, f"isoflop_{preset_name}.json")
    result = {
        "experiment": "isoflop",
        "command": "python -m minids.experiments.isoflop " + " ".join(args.argv),
        "preset": preset_name,
        "device": _device_name(args.device),
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
        "budgets": [float(b) for b in budgets],
        "paper_M_opt": {f"{b:.0e}": optimal_allocation(b)[0] for b in budgets},
        "seq_len": seq_len,
        "train_tokens": int(train_ids.numel()),
        "val_tokens": int(preset["n_val_windows"] * seq_len),
        "seeds": list(seeds),
        "lr_rule": "eta_opt(C) from Eq. 1" if args.lr is None else f"fixed {args.lr}",
        "runs": [],
    }
    print(f"IsoFLOP ({preset_name}) on {result['device']}: {len(budgets)} budgets x {len(preset['shapes'])} shapes "
          f"x {len(seeds)} seeds, {sum(p.skip is None for _, p in jobs)} runs to train -> {path}", flush=True)
    start = time.perf_counter()
    n = len(jobs)
    for i, (seed, plan) in enumerate(jobs):
        record = {**asdict(plan), "seed": seed}
        elapsed = (time.perf_counter() - start) / 60
        if plan.skip is None and elapsed > args.max_minutes:
            record["skip"] = f"time limit: {elapsed:.1f} min > --max-minutes {args.max_minutes}"
        if record["skip"] is None:
            try:
                record.update(run_one(plan, train_ids, val, args.device, seed, args.progress))
                print(f"[{i + 1}/{n}] seed {seed} C={plan.budget:.0e} {plan.name:>8} M={plan.M:.3g} D={plan.tokens:,} "
                      f"({plan.steps} steps x {plan.batch_size}) lr={plan.peak_lr:.2e}: val loss {record['val_loss']:.4f}"
                      f" ({record['seconds']:.1f} s)", flush=True)
            except Exception as err:  # record it and go on: one failure must not lose the other runs
                record["error"] = f"{type(err).__name__}: {err}"
                record["traceback"] = traceback.format_exc(limit=5)
                print(f"[{i + 1}/{n}] seed {seed} C={plan.budget:.0e} {plan.name}: FAILED {record['error']}", flush=True)
        elif seed == seeds[0] or record["skip"].startswith("time"):
            print(f"[{i + 1}/{n}] seed {seed} C={plan.budget:.0e} {plan.name:>8}: skipped ({record['skip']})", flush=True)
        result["runs"].append(record)
        result["seconds"] = time.perf_counter() - start
        write_json_atomic(path, result)
    for budget, run in best_per_budget(result).items():
        print(f"C={budget:.0e}: loss-optimal {run['name']} (M={run['M']:.3g}, mean val loss {run['val_loss']:.4f}); "
              f"the paper's M_opt(C) = {optimal_allocation(budget)[0]:.3g}", flush=True)
    print(f"done in {result['seconds'] / 60:.1f} min -> {path}", flush=True)
    return result


if __name__ == "__main__":
    main()
