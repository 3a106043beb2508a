"""What every rank of `python -m minids.pipeline` does once the process group is up (see run.py).

    build this rank's stage(s) -> forward (eval) -> training step -> [--check against DeepSeekLM] -> report
or, with --forward-sweep, forward throughput for each microbatch count.

Timings are the slowest rank's wall time (median of repeats after a warm-up); a pipeline step ends when
its last stage does.
"""

from __future__ import annotations

import inspect
import json
import os
import statistics
import sys
import tempfile
import time

import torch
import torch.distributed as dist

from ..config import ModelConfig
from ..model import DeepSeekLM
from ..train import lm_loss
from .schedule_sim import stage_rank
from .stage import build_stage, init_by_name

# Agreement demanded of the pipeline against the single-process model (relative errors). The pipeline
# computes the same function, but on microbatches: matrix products of other shapes round differently.
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2}

def lm_loss_fn(n_microbatches: int):
    """Cross-entropy of one microbatch, divided by m, so that the gradients summed over microbatches are
    the gradients of the whole batch's mean loss, whichever way this torch version scales them."""

    def loss_fn(logits, targets):
        return lm_loss(logits, targets) / n_microbatches

    return loss_fn


# --schedule -> the torch.distributed.pipelining class that runs it (run.py checks that it exists)
SCHEDULE_CLASSES = {"gpipe": "ScheduleGPipe", "1f1b": "Schedule1F1B", "interleaved": "ScheduleInterleaved1F1B",
                    "zb1p": "ScheduleInterleavedZeroBubble", "zbv": "ScheduleZBVZeroBubble",
                    "dualpipev": "ScheduleDualPipeV"}


class LocalStages:
    """The stages one rank holds: {stage index: StageModule}, one for GPipe and 1F1B, v for interleaved,
    two (r and 2p - 1 - r) for the V schedules. Parameters and gradients are those of all of them."""

    def __init__(self, modules: dict[int, torch.nn.Module], n_stages: int):
        self.modules, self.n_stages = modules, n_stages

    @property
    def holds_first(self) -> bool:
        return 0 in self.modules

    @property
    def holds_last(self) -> bool:
        return self.n_stages - 1 in self.modules

    def parameters(self):
        return [p for mod in self.modules.values() for p in mod.parameters()]

    def named_parameters(self):
        return [np for mod in self.modules.values() for np in mod.named_parameters()]

    def zero_grad(self):
        for mod in self.modules.values():
            mod.zero_grad(set_to_none=True)


def make_schedule(local: LocalStages, device, m, schedule, loss_fn=None):
    """Wrap each local stage in a PipelineStage and hand them to the schedule's class. Without a loss
    (inference) the one-stage-per-rank case runs GPipe's forward."""
    import torch.distributed.pipelining as pp

    stages = [pp.PipelineStage(mod, k, local.n_stages, device) for k, mod in sorted(local.modules.items())]
    name = "gpipe" if loss_fn is None else schedule
    cls = getattr(pp, SCHEDULE_CLASSES[name])
    kw = {"loss_fn": loss_fn}
    if "scale_grads" in inspect.signature(cls.__init__).parameters:
        kw["scale_grads"] = False  # our loss_fn already divides by m
    if name in ("gpipe", "1f1b"):
        return cls(stages[0], m, **kw)  # the one-stage-per-rank classes take a single stage
    return cls(stages, m, **kw)


def pipeline_step(sched, local: LocalStages, ids, targets=None, losses=None):
    """One schedule step: the rank with stage 0 feeds ids, the rank with the last stage (the last rank, or
    rank 0 for a V) gets targets and returns the merged logits."""
    args = (ids,) if local.holds_first else ()
    kw = {}
    if local.holds_last and targets is not None:
        kw = {"target": targets, "losses": losses}
    return sched.step(*args, **kw)


def timed(fn, device, repeats, warmup=1):
    """Median wall time of fn() over `repeats` after `warmup` runs, the slowest rank's time for each."""
    times = []
    for i in range(warmup + repeats):
        dist.barrier()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = torch.tensor([time.perf_counter() - start], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        if i >= warmup:
            times.append(t.item())
    return statistics.median(times)


@torch.no_grad()
def stage_forward_ms(module, config, stage, mb, seq_len, device, dtype, repeats):
    """This stage's own forward time for one microbatch, without any communication."""
    if stage == 0:
        x = torch.randint(0, config.vocab_size, (mb, seq_len), device=device)
    else:
        x = torch.randn(mb, seq_len, config.d_model, device=device, dtype=dtype)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        module(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def write_json(path: str, obj) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def batch_for(config: ModelConfig, batch: int, seq_len: int, seed: int, device):
    """The same random token ids and next-token targets on every rank (drawn on the CPU, then moved)."""
    gen = torch.Generator().manual_seed(seed + 1)
    tokens = torch.randint(0, config.vocab_size, (batch, seq_len + 1), generator=gen)
    # contiguous: the slices have row stride seq_len + 1, and newer torch (2.11) checks each microbatch's
    # strides against the ones the stages were built for, (seq_len, 1), and refuses a mismatch
    return tokens[:, :-1].contiguous().to(device), tokens[:, 1:].contiguous().to(device)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|, in float64."""
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def clip_global_norm_(params, max_norm: float, device) -> float:
    """Gradient clipping across the whole pipeline: each stage holds a piece of the global norm."""
    sq = torch.zeros((), dtype=torch.float64, device=device)
    for p in params:
        if p.grad is not None:
            sq += p.grad.double().pow(2).sum()
    dist.all_reduce(sq)
    norm = sq.sqrt().item()
    if norm > max_norm:
        for p in params:
            if p.grad is not None:
                p.grad.mul_(max_norm / norm)
    return norm


def describe(args, config, ranges, local: LocalStages, rank, device, dtype, mb) -> list[dict]:
    """Each local stage: its layers, parameters and own forward time for one microbatch."""
    infos = []
    for k, module in sorted(local.modules.items()):
        info = {
            "stage": k, "rank": rank, "layers": [ranges[k].start, ranges[k].stop],
            "params": sum(p.numel() for p in module.parameters()),
            "forward_ms_per_microbatch": stage_forward_ms(module, config, k, mb, args.seq_len, device, dtype,
                                                          args.repeats),
        }
        if device.type == "cuda":
            info["weights_bytes_allocated"] = torch.cuda.memory_allocated(device)
        infos.append(info)
    return infos


def gather_stage_info(infos: list[dict], world: int) -> list[dict]:
    """Every rank's stage descriptions, in stage order."""
    everyone = [None] * world
    dist.all_gather_object(everyone, infos)
    return sorted((i for rank_infos in everyone for i in rank_infos), key=lambda i: i["stage"])


def check_against_reference(args, config, local: LocalStages, device, dtype, ids, targets,
                            logits_eval, logits_train, loss_train, evaluated: bool = True) -> dict:
    """Build the single-process DeepSeekLM with the same seeded weights; compare this rank's share.
    Without a separate inference pass (`evaluated` False on every rank) there is no "logits_eval" entry."""
    ref = DeepSeekLM(config, attn_impl=args.attn, device="meta", dtype=dtype).materialize(device, init=False)
    init_by_name(ref, args.seed)
    ref_params = dict(ref.named_parameters())
    logits = ref(ids)
    loss = lm_loss(logits, targets)
    loss.backward()
    errs = {
        "weights": max((p - ref_params[n]).abs().max().item() for n, p in local.named_parameters()),
        "grads": max(rel_err(p.grad, ref_params[n].grad) for n, p in local.named_parameters()),
        "logits_train": 0.0, "loss": 0.0,
    }
    if evaluated:
        errs["logits_eval"] = rel_err(logits_eval, logits.detach()) if local.holds_last else 0.0
    if local.holds_last:
        errs["logits_train"] = rel_err(logits_train, logits.detach())
        errs["loss"] = abs(loss_train - loss.item()) / abs(loss.item())
    # Every rank learns the worst error of all, so every rank exits with the same status.
    t = torch.tensor(list(errs.values()), dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    errs = dict(zip(errs, t.tolist()))
    tol = TOLERANCE[dtype]
    errs["tolerance"] = tol
    errs["passed"] = errs["weights"] == 0.0 and all(errs[k] <= tol for k in
                                                  ("grads", "logits_eval", "logits_train", "loss") if k in errs)
    if local.holds_last:
        errs["loss_reference"] = loss.item()
    return errs


def build_local(args, config, ranges, rank, world, device, dtype) -> LocalStages:
    """This rank's stages: stage_rank (schedule_sim) says which of the len(ranges) stages live here."""
    mine = [k for k in range(len(ranges)) if stage_rank(args.schedule, k, world) == rank]
    return LocalStages({k: build_stage(config, ranges, k, device, dtype, seed=args.seed, attn_impl=args.attn)
                        for k in mine}, len(ranges))


def run_session(args, config, ranges, rank, world, device, dtype) -> int:
    local = build_local(args, config, ranges, rank, world, device, dtype)
    if args.forward_sweep:
        return forward_sweep(args, config, ranges, local, rank, world, device, dtype)
    m = args.microbatches
    batch = args.batch if args.batch is not None else m
    ids, targets = batch_for(config, batch, args.seq_len, args.seed, device)
    report = {
        "preset": args.preset, "n_layers": config.n_layers, "stages": len(ranges), "ranks": world,
        "schedule": args.schedule, "partition": args.partition, "device": str(device.type), "dtype": args.dtype,
        "torch": torch.__version__, "batch": batch, "microbatches": m, "seq_len": args.seq_len,
        "ranges": [[r.start, r.stop] for r in ranges],
    }
    stage_info = describe(args, config, ranges, local, rank, device, dtype, batch // m)

    # Forward only (inference), one stage per rank: GPipe without a loss runs no backward. (With several
    # stages per rank torch has no forward-only schedule for every placement: the training step's logits
    # are checked instead.)
    logits_eval = None
    if len(ranges) == world:
        evaluator = make_schedule(local, device, m, "gpipe")
        with torch.no_grad():
            logits_eval = pipeline_step(evaluator, local, ids)
            # The step above was the warm-up.
            report["forward_step_s"] = timed(lambda: pipeline_step(evaluator, local, ids), device, args.repeats, 0)

    # One training step: pipelined forward and backward, global clipping, AdamW (the paper's settings).
    trainer = make_schedule(local, device, m, args.schedule, lm_loss_fn(m))
    params = local.parameters()
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    losses: list = []
    local.zero_grad()
    logits_train = pipeline_step(trainer, local, ids, targets, losses)
    loss_train = float(sum(l.item() for l in losses)) if local.holds_last else None
    check = None
    if args.check:
        check = check_against_reference(args, config, local, device, dtype, ids, targets,
                                         logits_eval, logits_train, loss_train, evaluated=len(ranges) == world)
    clip_global_norm_(params, 1.0, device)
    opt.step()

    def train_step():
        local.zero_grad()
        pipeline_step(trainer, local, ids, targets, [])
        clip_global_norm_(params, 1.0, device)
        opt.step()

    report["train_step_s"] = timed(train_step, device, args.repeats, warmup=0)  # warmed up by the first step
    report["stage_info"] = gather_stage_info(stage_info, world)
    if local.holds_last:
        report["loss"] = loss_train
    # The rank with the last stage knows the loss; it hands the report to rank 0, which prints it.
    last = stage_rank(args.schedule, len(ranges) - 1, world)
    box = [report if rank == last else None]
    dist.broadcast_object_list(box, src=last)
    report = box[0]
    report["check"] = check
    if rank == 0:
        print_report(report)
        if args.json:
            write_json(args.json, report)
    return 0 if check is None or check["passed"] else 1


def print_report(r: dict) -> None:
    tokens = r["batch"] * r["seq_len"]
    print(f"minids.pipeline: {r['preset']} ({r['n_layers']} layers), {r['stages']} stages on "
          f"{r.get('ranks', r['stages'])} ranks, {r['device']} "
          f"({r['dtype']}), {r['schedule']}, batch {r['batch']} x {r['seq_len']} tokens in {r['microbatches']} "
          f"microbatches, torch {r['torch']}")
    print(f"{'stage':>5} {'rank':>4} {'layers':>9} {'params':>12} {'forward ms/microbatch':>22}")
    for s in r["stage_info"]:
        print(f"{s['stage']:>5} {s.get('rank', s['stage']):>4} {s['layers'][0]:>4}-{s['layers'][1] - 1:<4} {s['params']:>12,} "
              f"{s['forward_ms_per_microbatch']:>22.2f}")
    fwd = r.get("forward_step_s")
    print((f"forward step {1e3 * fwd:.1f} ms ({tokens / fwd:,.0f} tok/s); " if fwd else "")
          + f"training step {1e3 * r['train_step_s']:.1f} ms ({tokens / r['train_step_s']:,.0f} tok/s); "
          f"loss {r['loss']:.4f}")
    c = r["check"]
    if c is not None:
        print(f"check against DeepSeekLM: weights max |diff| {c['weights']:.1e}, logits rel err "
              f"{max(c.get('logits_eval', 0.0), c['logits_train']):.1e}, loss rel err {c['loss']:.1e}, grads rel err "
              f"{c['grads']:.1e} (tolerance {c['tolerance']:.0e}): {'PASS' if c['passed'] else 'FAIL'}")
    sys.stdout.flush()


def forward_sweep(args, config, ranges, local, rank, world, device, dtype) -> int:
    """Forward throughput for m = 1, 2, ... microbatches of --microbatch-size sequences each."""
    from .run import sweep_points

    mb = args.microbatch_size
    base = {
        "preset": args.preset, "n_layers": config.n_layers, "stages": world, "device": str(device.type),
        "dtype": args.dtype, "torch": torch.__version__, "seq_len": args.seq_len, "microbatch_size": mb,
        "ranges": [[r.start, r.stop] for r in ranges],
    }
    base["stage_info"] = gather_stage_info(describe(args, config, ranges, local, rank, device, dtype, mb), world)
    points, start = [], time.perf_counter()
    for m in sweep_points(args.forward_sweep):
        # Stop starting new points once over budget: decided from the slowest rank's clock, by all alike.
        spent = torch.tensor([time.perf_counter() - start], dtype=torch.float64, device=device)
        dist.all_reduce(spent, op=dist.ReduceOp.MAX)
        if spent.item() > args.time_budget:
            break
        ids, _ = batch_for(config, m * mb, args.seq_len, args.seed, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sched = make_schedule(local, device, m, "gpipe")
        with torch.no_grad():
            t = timed(lambda: pipeline_step(sched, local, ids), device, args.repeats)
        peak = [torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None]
        peaks = [None] * world
        dist.all_gather_object(peaks, peak[0])
        point = {"microbatches": m, "batch": m * mb, "step_s": t,
                 "tokens_per_s": m * mb * args.seq_len / t, "peak_bytes_per_stage": peaks}
        points.append(point)
        if rank == 0:
            print(f"forward sweep: m={m}: {1e3 * t:.1f} ms, {point['tokens_per_s']:,.0f} tok/s", flush=True)
            if args.json:
                write_json(args.json, {**base, "points": points})
    return 0
