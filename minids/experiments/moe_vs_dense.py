"""MoE against dense on a deep stack, measured: equal active parameters, equal total parameters, and balance.

    python -m minids.experiments.moe_vs_dense cuda --parts active,total --workers 7 --deadline-s 560  # one H200
    python -m minids.experiments.moe_vs_dense cuda --parts balance --workers 6 --deadline-s 560       # then this
    python -m minids.experiments.moe_vs_dense tiny --workers 2                                        # a CPU, seconds

The seed's question: how would the 67B's depth combine with Mixture of Experts? At the miniature's scale
(minids.experiments.miniature: the project's Python corpus and tokenizer, 10 layers of width 320), every model
trains with the same recipe (train.py: AdamW 0.9/0.95, weight decay 0.1, clip 1.0, warm-up + multi-step
schedule, bf16 autocast on CUDA), for the same steps, on the same batches (the seed fixes the data stream):

    dense       the miniature's shape: 10 layers, SwiGLU d_ff 896
    moe         DeepSeekMoE on the same stack: layer 0 dense, layers 1-9 with 1 shared + 31 routed experts of
                width 112 (= 896 / 8), 7 routed per token: the active FFN width is (1 + 7) x 112 = 896, so the
                active parameters and FLOPs per token equal the dense model's (plus the router, 31 x 320 per
                layer), and the total FFN width is 4x; balance loss alpha_1 = 0.01 (the 2B paper's)
    dense-deep  a dense model of the MoE model's TOTAL parameters spent on depth instead: more layers of the
                dense shape (the layer count that matches the total best)
    moe-noaux   the MoE model without any balancing
    moe-bias    without the loss, with V3's bias update (gamma = 0.001 per step)

Parts: "active" = dense, moe; "total" = dense-deep (against moe); "balance" = moe-noaux, moe-bias (against moe).
Every run records its loss curve, held-out loss (nats/token and bits/byte) at each evaluation, parameters
(total, active), FLOPs per token, tokens/s, and for the MoE variants the tokens each expert received on the
held-out windows per layer at every evaluation (imbalance = max / mean) and at the end.

The runs go side by side on one device (--workers N processes, as in hop_depth.py; default 1, in this
process): each model is small, so one run alone leaves an H200 mostly idle between its kernel launches. Each run
is its own process (its own CUDA context; the corpus is tokenized once per process), and its record is written
to the results file (atomically) as soon as it ends. The file holds every run finished so far: a run that was
cut short or failed is recorded as such (status "skipped: deadline", "incomplete: ..." or "failed: ..."), only
"done" runs are summarized, and running the command again skips the runs already done in the file (with the
same setting; --workers is not part of it), so parts and interrupted runs add up. Runs start in plan order,
seed by seed. The deadline (--deadline-s from the command's start): a run is not started when even the fastest
earlier run of its variant would pass it (recorded as skipped), and a started run stops at the first step past
it (recorded as incomplete); a run alone (--workers 1) also stops early, after 7.5% of its steps, when at its
measured pace it would end after the deadline. Records carry concurrent_runs: tokens/s is per run, with that
many runs sharing the device (the cost ratio is measured alone by benchmarks/bench_moe.py).

On one H200 (an ESTIMATE, from the first, serial attempt, --deadline-s 215, which finished dense seed 0 in 49 s
at 338k tokens/s and moe seed 0 in 120 s at 140k tokens/s; dense-deep, 31 layers, was estimated at 169 s): the
seven runs left of "active,total" take 2 x 49 + 2 x 120 + 3 x 169 = 845 s one at a time, more than one
10-minute command; side by side (--workers 7) they cannot take less than the longest run alone (169 s), and
with the GPU shared seven ways we guess about 250-450 s (not measured: the only evidence is two launch-bound
95-layer runs side by side taking 112 s against ~105 s each alone, data/results/logs/norm_placement_cuda.log).
The six balance runs (moe-noaux, moe-bias x 3 seeds, 6 x ~120 s = 720 s one at a time) likewise about 200-400 s
with --workers 6. Whatever the deadline cuts is recorded, and the same command run again finishes it.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import os
import platform
import time
import traceback
from dataclasses import asdict, dataclass, replace

import torch

from ..config import ModelConfig
from ..paths import PROJECT_ROOT
from ..files import read_json
from ..results import write_json_atomic
from .cli import check_out, nonnegative_float, positive_int, seed_list
from .finetune import _Inline
from .hop_depth import _Deadline

VARIANTS = ("dense", "moe", "dense-deep", "moe-noaux", "moe-bias")
PARTS = {"active": ("dense", "moe"), "total": ("moe", "dense-deep"), "balance": ("moe", "moe-noaux", "moe-bias")}


@dataclass(frozen=True)
class MoESetting:
    dense: ModelConfig  # the dense model of the equal-active pair
    n_routed: int
    n_shared: int
    top_k: int
    moe_d_ff: int
    seq_len: int
    batch: int
    steps: int
    eval_every: int
    peak_lr: float = 2e-3
    warmup_fraction: float = 0.03
    aux_alpha: float = 0.01
    bias_gamma: float = 1e-3
    first_dense: int = 1
    seeds: tuple[int, ...] = (0, 1, 2)
    val_windows: int | None = 64
    text_chars: int | None = None  # only the first characters of the corpus (tests)


MINIATURE = ModelConfig(vocab_size=8064, d_model=320, n_layers=10, n_heads=16, n_kv_heads=2, d_ff=896, max_seq_len=512)
SETTINGS = {
    "cuda": MoESetting(dense=MINIATURE, n_routed=31, n_shared=1, top_k=7, moe_d_ff=112, seq_len=512, batch=32,
                       steps=1000, eval_every=100),
    "tiny": MoESetting(dense=MINIATURE.replace(d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, d_ff=64,
                                               max_seq_len=32),
                       n_routed=7, n_shared=1, top_k=3, moe_d_ff=16, seq_len=32, batch=8, steps=20, eval_every=10,
                       seeds=(0, 1), val_windows=8, text_chars=60_000),
}


def variant_config(setting: MoESetting, variant: str) -> ModelConfig:
    """The model config of one variant (see the module docstring)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")
    dense = setting.dense
    moe = dense.replace(n_routed_experts=setting.n_routed, n_shared_experts=setting.n_shared,
                        n_experts_per_token=setting.top_k, moe_d_ff=setting.moe_d_ff,
                        first_dense_layers=setting.first_dense, aux_loss_alpha=setting.aux_alpha)
    if variant == "dense":
        return dense
    if variant == "moe":
        return moe
    if variant == "moe-noaux":
        return moe.replace(aux_loss_alpha=0.0)
    if variant == "moe-bias":
        return moe.replace(aux_loss_alpha=0.0, bias_update_speed=setting.bias_gamma)
    return dense.replace(n_layers=equal_total_layers(dense, moe))  # dense-deep


def equal_total_layers(dense: ModelConfig, moe: ModelConfig) -> int:
    """The number of dense layers whose total parameters come closest to the MoE model's."""
    from ..accounting import count_params

    target = count_params(moe).total
    return min(range(1, 20 * moe.n_layers), key=lambda n: abs(count_params(dense.replace(n_layers=n)).total - target))


# ---- one run --------------------------------------------------------------------------------------------------
@torch.no_grad()
def held_out(model, windows: torch.Tensor, nbytes: torch.Tensor, batch: int = 16) -> dict:
    """Held-out nats/token and bits/byte, and (MoE) tokens per expert per layer summed over the windows."""
    from .miniature import held_out_loss

    result = held_out_loss(model, windows, nbytes, batch=batch)
    if model.config.is_moe:  # a second pass for the load: held_out_loss sees only the logits
        load = None
        for i in range(0, len(windows), batch):
            model(windows[i:i + batch, :-1], validate=False)
            load = model.expert_load() if load is None else load + model.expert_load()
        result["load"] = load.tolist()
        result["imbalance"] = (load.amax(-1) / load.mean(-1)).tolist()  # per MoE layer
    return result


def run_one(setting: MoESetting, variant: str, seed: int, data: dict, device, steps: int | None = None,
            deadline: float | None = None, project: bool = False) -> dict:
    """Train one variant with one seed; return its record. With a `deadline` (a time.time()) the run raises
    _Deadline at the first step past it, and with `project` also when, timed over its first steps, it would end
    after it (see `watch_deadline`)."""
    from ..accounting import count_params, matmul_flops_per_token
    from ..model import DeepSeekLM
    from ..train import TrainConfig, train
    from .depth_vs_width import binned
    from .miniature import random_windows

    cfg = variant_config(setting, variant)
    steps = steps or setting.steps
    torch.manual_seed(seed)
    model = DeepSeekLM(cfg, device=device)
    get_batch = random_windows(data["train"], setting.batch, setting.seq_len)
    if deadline is not None:
        get_batch = watch_deadline(get_batch, steps, deadline, project)
    tc = TrainConfig(steps=steps, batch_size=setting.batch, seq_len=setting.seq_len, peak_lr=setting.peak_lr,
                     warmup_steps=max(1, int(setting.warmup_fraction * steps)),
                     eval_every=min(setting.eval_every, steps), seed=seed, device=str(device))
    history = train(model, get_batch, tc, eval_fn=lambda m: held_out(m, data["windows"], data["nbytes"]),
                    progress=False)
    p = count_params(cfg)
    steps_b, loss_b = binned(history["losses"], bins=50)
    rec = {
        "variant": variant, "seed": seed, "status": "done", "config": cfg.to_dict(), "n_layers": cfg.n_layers,
        "params_total": p.total, "params_active": p.active, "params_non_embedding": p.non_embedding,
        "params_active_non_embedding": p.active_non_embedding,
        "flops_per_token": matmul_flops_per_token(cfg, setting.seq_len, training=True),
        "steps": steps, "tokens": history["tokens"], "train_seconds": history["train_seconds"],
        "tokens_per_s": history["tokens_per_s"], "curve": {"steps": steps_b, "loss": loss_b},
        "evals": history["evals"], "final": history["evals"][-1],
    }
    if "aux_losses" in history:
        rec["aux_curve"] = dict(zip(("steps", "aux_loss"), binned(history["aux_losses"], bins=50)))
    if cfg.bias_update_speed:
        rec["expert_bias"] = [m.expert_bias.tolist() for m in model.moe_layers()]
    return rec


def watch_deadline(get_batch, steps: int, deadline: float, project: bool = False, margin: float = 1.1):
    """get_batch that raises _Deadline at the first step after `deadline` (a time.time()). With `project`, the
    steps from steps/40 to 3 steps/40 are timed (past the warm-up, before the first evaluation at the usual
    eval_every) and the run stops there if the rest, at that pace and with a 10% margin, would end after the
    deadline. Only for a run alone on its device: beside other runs the pace rises when they end."""
    first, second = steps // 40, 3 * steps // 40
    marks: dict[int, float] = {}

    def watched(step: int, generator: torch.Generator):
        now = time.time()
        if now > deadline:
            raise _Deadline(f"deadline at step {step} of {steps}")
        if project and first >= 1 and step in (first, second):
            marks[step] = now
            if step == second and first in marks:
                end = now + (steps - second) * (now - marks[first]) / (second - first) * margin
                if end > deadline:
                    raise _Deadline(f"projected to end {end - deadline:.0f} s after the deadline "
                                    f"(stopped at step {step} of {steps})")
        return get_batch(step, generator)

    return watched


_DATA: dict = {}  # per process: the data of each (setting, device) loaded so far


def cached_data(setting: MoESetting, device) -> dict:
    """load_data once per process (a worker runs several runs of the same setting)."""
    key = (setting.text_chars, setting.seq_len, setting.val_windows, setting.dense.vocab_size, str(device))
    if key not in _DATA:
        _DATA[key] = load_data(setting, device)
    return _DATA[key]


def _worker(job: dict) -> dict:
    """One run, in a worker process (or inline with one worker): its record, whatever happens."""
    variant, seed, device = job["variant"], job["seed"], job["device"]
    if job["deadline"] is not None and time.time() >= job["deadline"]:
        return {"variant": variant, "seed": seed, "status": "skipped: deadline"}
    threads = torch.get_num_threads()
    t0 = time.perf_counter()
    try:
        if job["threads"]:
            torch.set_num_threads(job["threads"])  # the workers share the host's cores
        data = cached_data(job["setting"], device)
        t0 = time.perf_counter()  # the run itself, as before: the data are loaded once per process
        rec = run_one(job["setting"], variant, seed, data, device, steps=job["steps"], deadline=job["deadline"],
                      project=job["concurrent_runs"] == 1)
    except _Deadline as stop:
        rec = {"variant": variant, "seed": seed, "status": f"incomplete: {stop.args[0]}"}
    except Exception as exc:  # noqa: BLE001  one failure must not lose the other runs
        traceback.print_exc(limit=3)
        rec = {"variant": variant, "seed": seed, "status": f"failed: {type(exc).__name__}: {exc}"[:300]}
    finally:
        torch.set_num_threads(threads)  # as it was (one worker runs in the caller's process)
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
    rec["wall_seconds"] = time.perf_counter() - t0
    rec["concurrent_runs"] = job["concurrent_runs"]  # tokens/s is per run, with this many sharing the device
    return rec


def load_data(setting: MoESetting, device) -> dict:
    """The corpus as token streams (train, val), the held-out windows and the bytes per token (miniature.py)."""
    from .miniature import load_corpus

    return load_corpus(setting.seq_len, setting.val_windows, setting.dense.vocab_size, setting.text_chars, device)


# ---- the command --------------------------------------------------------------------------------------------
def plan(setting: MoESetting, parts) -> list[tuple[str, int]]:
    """(variant, seed) in the order they run: seed by seed, so a deadline leaves whole seeds."""
    variants = list(dict.fromkeys(v for part in parts for v in PARTS[part]))
    return [(v, s) for s in setting.seeds for v in variants]


def todo_runs(doc: dict, setting: MoESetting, parts) -> list[tuple[str, int]]:
    """The plan's (variant, seed) not yet "done" in the results document, in plan order."""
    done = {(r["variant"], r["seed"]) for r in doc["runs"] if r["status"] == "done"}
    return [(v, s) for v, s in plan(setting, parts) if (v, s) not in done]


def run(setting: MoESetting, parts, device, results_path, deadline_s: float, started: float,
        name: str = "custom", steps: int | None = None, log=print, workers: int = 1) -> dict:
    """Run the plan, `workers` runs at a time, appending to (and resuming from) the results file; returns the
    file's content. `started` is the command's time.perf_counter() at its start."""
    from .depth_vs_width import device_name

    header = {"record": "moe_vs_dense", "setting_name": name, "setting": _setting_dict(setting)}
    doc = {**header, "runs": []}
    if os.path.exists(results_path):
        old = read_json(results_path, what="moe_vs_dense results file")  # a damaged file is named
        if not isinstance(old, dict) or old.get("record") != "moe_vs_dense" or not isinstance(old.get("runs"), list):
            raise ValueError(f"{results_path} is not a moe_vs_dense results file, so it is not replaced; "
                             "pass another --results")
        if old.get("setting") != header["setting"]:  # its runs would be lost: refused, never started over
            differs = sorted(k for k in set(old.get("setting") or {}) | set(header["setting"])
                             if (old.get("setting") or {}).get(k) != header["setting"].get(k))
            raise ValueError(f"{results_path} holds runs of another setting (fields {differs[:5]} differ); "
                             "resuming would mix them and starting over would lose them: pass another --results")
        doc = old
        log(f"resuming {results_path}: {sum(r['status'] == 'done' for r in doc['runs'])} runs done")
    workers = max(1, int(workers))
    doc.update(device=str(device), device_name=device_name(device), torch=torch.__version__,
               python=platform.python_version(), parts_last=list(parts), workers_last=workers)
    todo = todo_runs(doc, setting, parts)
    deadline = time.time() + deadline_s - (time.perf_counter() - started)  # a time.time(), for the workers
    # a lower bound on a run's wall time: the fastest finished run of its variant (runs side by side are slower);
    # a run is not started when even that would pass the deadline, and is stopped at the deadline otherwise
    seconds_per_run: dict[str, float] = {}
    for r in doc["runs"]:
        if r["status"] == "done" and "wall_seconds" in r:
            seconds_per_run[r["variant"]] = min(r["wall_seconds"], seconds_per_run.get(r["variant"], float("inf")))
    concurrent_runs = max(1, min(workers, len(todo)))
    # threads per run: oversubscribed cores make every OpenMP region wait (finetune.py); one worker keeps the
    # caller's setting
    threads = max(1, ((os.cpu_count() or 1) - 1) // workers) if workers > 1 else None
    log(f"moe_vs_dense {name}: {len(todo)} runs to go ({len(plan(setting, parts)) - len(todo)} done), "
        f"{concurrent_runs} at a time, deadline {deadline_s:.0f} s")

    def save(rec: dict) -> None:
        doc["runs"] = [r for r in doc["runs"] if (r["variant"], r["seed"]) != (rec["variant"], rec["seed"])] + [rec]
        write_json_atomic(results_path, doc)

    def finished(rec: dict) -> None:
        variant, seed = rec["variant"], rec["seed"]
        if rec["status"] == "done":
            seconds_per_run[variant] = min(rec["wall_seconds"], seconds_per_run.get(variant, float("inf")))
            log(f"  {variant} seed {seed}: val {rec['final']['val_loss']:.4f} nats/token, "
                f"{rec['tokens_per_s'] / 1e3:.0f}k tokens/s, {rec['wall_seconds']:.0f} s"
                + (f", imbalance {max(rec['final']['imbalance']):.2f}" if "imbalance" in rec["final"] else "")
                + f" ({time.perf_counter() - started:.0f} s so far)")
        else:
            log(f"  {variant} seed {seed}: {rec['status']}")
        save(rec)

    if workers <= 1:
        pool = _Inline()  # runs each job at submit, in this process
    else:
        pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    queue, pending = list(todo), {}

    def fill() -> None:  # start runs until `workers` are under way, each checked against the deadline first
        while queue and len(pending) < workers:
            variant, seed = queue.pop(0)
            left, estimate = deadline - time.time(), seconds_per_run.get(variant, 0.0)
            if left <= 0 or estimate > left:
                why = "the deadline has passed" if left <= 0 else f"~{estimate:.0f} s would pass the deadline"
                used = time.perf_counter() - started
                log(f"skip {variant} seed {seed}: {why} ({used:.0f} of {deadline_s:.0f} s used)")
                save({"variant": variant, "seed": seed, "status": "skipped: deadline"})
                continue
            log(f"{variant} seed {seed} ...")
            job = {"setting": setting, "variant": variant, "seed": seed, "device": str(device), "steps": steps,
                   "deadline": deadline, "threads": threads, "concurrent_runs": concurrent_runs}
            try:
                pending[pool.submit(_worker, job)] = (variant, seed)
            except Exception as exc:  # noqa: BLE001  a broken pool (a worker killed, e.g. out of memory)
                finished({"variant": variant, "seed": seed, "status": f"failed: not started: {exc!r}"[:300]})

    try:
        fill()
        while pending:
            for future in cf.wait(pending, return_when=cf.FIRST_COMPLETED)[0]:
                variant, seed = pending.pop(future)
                try:
                    rec = future.result()
                except Exception as exc:  # noqa: BLE001  the worker process died
                    rec = {"variant": variant, "seed": seed, "status": f"failed: {exc!r}"[:300]}
                finished(rec)
            fill()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return doc


def summarize(doc: dict) -> dict:
    """Per variant: seeds done, mean/std of the final held-out loss, parameters, tokens/s, worst imbalance."""
    from .depth_vs_width import mean_std

    out = {}
    for variant in VARIANTS:
        runs = [r for r in doc["runs"] if r["variant"] == variant and r["status"] == "done"]
        if not runs:
            continue
        loss = mean_std([r["final"]["val_loss"] for r in runs])
        # the spread of one seed is unknown, not 0
        out[variant] = {"seeds": len(runs), "val_loss": loss[0], "val_loss_std": loss[1] if len(runs) > 1 else None,
                        "val_bpb": mean_std([r["final"]["val_bpb"] for r in runs])[0],
                        "params_total": runs[0]["params_total"], "params_active": runs[0]["params_active"],
                        "n_layers": runs[0]["n_layers"], "tokens_per_s": mean_std([r["tokens_per_s"] for r in runs])[0]}
        if "imbalance" in runs[0]["final"]:
            layers = range(len(runs[0]["final"]["imbalance"]))
            out[variant]["final_imbalance_by_layer"] = [mean_std([r["final"]["imbalance"][i] for r in runs])[0]
                                                        for i in layers]
    return out


def _setting_dict(setting: MoESetting) -> dict:
    d = asdict(setting)
    d["dense"] = setting.dense.to_dict()
    d["seeds"] = list(setting.seeds)
    return d


def main(argv=None) -> dict:
    started = time.perf_counter()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("setting", choices=sorted(SETTINGS), help="cuda: one H200; tiny: seconds on a CPU")
    p.add_argument("--parts", default="active,total,balance", help=f"comma-separated, of {', '.join(PARTS)}")
    p.add_argument("--device", default=None, help="default: cuda for the cuda setting, else cpu")
    p.add_argument("--results", default=None, help="default data/results/moe_vs_dense_<setting>.json")
    p.add_argument("--deadline-s", type=nonnegative_float, default=560.0, help="start no run that would end after this")
    p.add_argument("--steps", type=positive_int, default=None, help="override the setting's steps per run")
    p.add_argument("--seeds", type=seed_list, default=None, help="comma-separated seeds (default: the setting's)")
    p.add_argument("--workers", type=positive_int, default=1, help="runs side by side, each its own process (default 1)")
    args = p.parse_args(argv)
    setting = SETTINGS[args.setting]
    if args.seeds:
        setting = replace(setting, seeds=args.seeds)
    if args.steps:
        setting = replace(setting, steps=args.steps)
    parts = [s for s in args.parts.split(",") if s]
    unknown = [s for s in parts if s not in PARTS]
    if unknown:
        raise SystemExit(f"unknown part(s) {unknown}; choose from {list(PARTS)}")
    device = args.device or ("cuda" if args.setting == "cuda" else "cpu")
    results = args.results or PROJECT_ROOT / "data" / "results" / f"moe_vs_dense_{args.setting}.json"
    check_out(p, results)  # before any work: a bad --results never costs a run
    doc = run(setting, parts, device, results, args.deadline_s, started, name=args.setting,
              log=lambda line: print(line, flush=True), workers=args.workers)
    for variant, s in summarize(doc).items():
        spread = "n/a" if s["val_loss_std"] is None else f"{s['val_loss_std']:.4f}"
        print(f"{variant:11s} {s['seeds']} seeds  val {s['val_loss']:.4f} +- {spread} nats/token  "
              f"{s['n_layers']} layers  total {s['params_total'] / 1e6:.1f}M  active {s['params_active'] / 1e6:.1f}M  "
              f"{s['tokens_per_s'] / 1e3:.0f}k tok/s")
    print(f"wrote {results} ({time.perf_counter() - started:.0f} s)")
    return doc


if __name__ == "__main__":
    main()
