"""Run DeepSeekLM as a pipeline on torch.distributed.pipelining: a process per rank, one or more stages each.

    torchrun --nproc-per-node 2 -m minids.pipeline --preset deepseek-llm-67b-mini --microbatches 4 \\
        --schedule dualpipev --check

--schedule picks torch.distributed.pipelining's class: gpipe (ScheduleGPipe), 1f1b (Schedule1F1B),
interleaved (ScheduleInterleaved1F1B, --chunks v stages per rank, default 2), zb1p
(ScheduleInterleavedZeroBubble, --chunks v, default 1), zbv (ScheduleZBVZeroBubble) and dualpipev
(ScheduleDualPipeV, torch >= 2.9). The cost model cuts the layers into p * v stages (partition.py);
stage s lives on rank s mod p, or for zbv and dualpipev on a V: rank r holds stages r and 2p - 1 - r.

Every rank builds only its own stages (`stage.build_stage`: meta device, then its layers on its device),
wraps them in PipelineStage and drives them with the schedule: the rank with stage 0 feeds the token ids,
the rank with the last stage computes the loss (the last rank; rank 0 on a V), activations travel forward
and gradients backward between ranks (gloo on CPU, NCCL on CUDA, one GPU per rank). It runs a forward
pass (with one stage per rank) and a training step (AdamW, global gradient clipping at 1.0) and prints
per-stage times. With --check, every
rank also builds the single-process DeepSeekLM with the same weights (they are seeded by name) and
compares logits, loss and its own stage's gradients; the exit status is 1 on a mismatch.

With --forward-sweep 1,2,...,8 it instead measures forward throughput with 1, 2, ... microbatches of
--microbatch-size sequences (the benchmark of benchmarks/bench_pipeline_gpu.py).

Bad arguments fail on every rank before the process group starts, so nothing can hang waiting for a
peer that already left.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys

import torch

from ..config import ModelConfig
from .partition import check_n_stages, naive_partition, partition
from .schedule_sim import SCHEDULES, V_SHAPED, check_schedule

# Schedules newer than torch.distributed.pipelining itself: the first torch release that has each.
MIN_TORCH = {"dualpipev": (2, 9)}

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class UsageError(ValueError):
    """A bad command line, found before any process group exists."""


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="torchrun --nproc-per-node N -m minids.pipeline", description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="tiny", help=f"one of {', '.join(ModelConfig.preset_names())}")
    ap.add_argument("--n-layers", type=int, default=None, help="override the preset's layer count (a shallower slice)")
    ap.add_argument("--microbatches", type=int, default=2, help="m: microbatches per step")
    ap.add_argument("--batch", type=int, default=None, help="sequences per step (default: one per microbatch)")
    ap.add_argument("--seq-len", type=int, default=32, help="tokens per sequence")
    ap.add_argument("--schedule", default="gpipe", choices=SCHEDULES)
    ap.add_argument("--chunks", type=int, default=None,
                    help="v: stages per rank (interleaved: default 2; zb1p: default 1; zbv, dualpipev: 2)")
    ap.add_argument("--stages", type=int, default=None, help="pipeline stages; must equal the number of processes")
    ap.add_argument("--partition", default="flops", choices=("flops", "params", "activation_bytes", "naive"))
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--dtype", default="float32", choices=tuple(DTYPES))
    ap.add_argument("--attn", default="sdpa", choices=("sdpa", "einsum"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=3.2e-4)
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (median) after one warm-up")
    ap.add_argument("--check", action="store_true", help="compare with the single-process model; exit 1 on mismatch")
    ap.add_argument("--forward-sweep", default=None, help="comma-separated microbatch counts: forward throughput only")
    ap.add_argument("--microbatch-size", type=int, default=1, help="sequences per microbatch in --forward-sweep")
    ap.add_argument("--time-budget", type=float, default=300.0, help="seconds; the sweep stops starting new points after")
    ap.add_argument("--json", default=None, help="write the results here (rank 0, atomically)")
    return ap.parse_args(argv)


def dist_env() -> tuple[int, int, int, int]:
    """(rank, world_size, local_rank, local_world_size) from the variables torchrun sets."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise UsageError("run under torchrun, one process per stage: "
                         "torchrun --nproc-per-node N -m minids.pipeline ...")
    world = int(os.environ["WORLD_SIZE"])
    return (int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", 0)),
            int(os.environ.get("LOCAL_WORLD_SIZE", world)))


def sweep_points(text: str | None) -> list[int]:
    if text is None:
        return []
    try:
        points = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--forward-sweep takes comma-separated integers like 1,2,4,8, got {text!r}") from None
    if not points or min(points) < 1:
        raise UsageError(f"--forward-sweep needs microbatch counts >= 1, got {text!r}")
    return points


def default_chunks(schedule: str, chunks: int | None) -> int:
    if schedule in V_SHAPED:
        if chunks not in (None, 2):
            raise UsageError(f"--schedule {schedule} places exactly 2 stages per rank (a V), not --chunks {chunks}")
        return 2
    if schedule in ("gpipe", "1f1b"):
        if chunks not in (None, 1):
            raise UsageError(f"--schedule {schedule} runs one stage per rank; for --chunks {chunks} use "
                             "--schedule interleaved or zb1p")
        return 1
    v = chunks if chunks is not None else (2 if schedule == "interleaved" else 1)
    if v < 1:
        raise UsageError(f"--chunks must be >= 1, got {v}")
    return v


def check_torch(schedule: str, version: str | None = None) -> None:
    """A clear refusal where this torch lacks the schedule's class (`version` for the tests)."""
    import torch.distributed.pipelining as pp

    from .session import SCHEDULE_CLASSES

    version = version or torch.__version__
    have = tuple(int(x) for x in version.split("+")[0].split(".")[:2])
    need = MIN_TORCH.get(schedule)
    if (need is not None and have < need) or not hasattr(pp, SCHEDULE_CLASSES[schedule]):
        need_text = f"torch >= {need[0]}.{need[1]}" if need else "a torch whose pipelining has it"
        raise UsageError(f"--schedule {schedule} needs {SCHEDULE_CLASSES[schedule]}, which needs {need_text}; "
                         f"this is torch {version}. Upgrade torch or pick another of {', '.join(SCHEDULES)}")


def plan(args: argparse.Namespace, world: int, local_world: int) -> tuple[ModelConfig, list[range]]:
    """Validate everything that could make a rank fail or wait forever; return the config and the stages.

    Every rank runs this on the same arguments and environment, so all of them fail alike, before any
    collective operation.
    """
    try:
        config = ModelConfig.preset(args.preset)
    except KeyError as e:
        raise UsageError(e.args[0]) from None
    if args.n_layers is not None:
        config = config.replace(n_layers=args.n_layers)
    if args.stages is not None and args.stages != world:
        raise UsageError(f"--stages {args.stages} but torchrun started {world} processes: this runs one stage per "
                         f"process, so use --nproc-per-node {args.stages} (or drop --stages)")
    check_torch(args.schedule)
    v = default_chunks(args.schedule, args.chunks)
    try:
        check_n_stages(config.n_layers, world * v)
    except ValueError as e:
        raise UsageError(f"{e} (torchrun started {world} processes, {v} stage(s) each)") from None
    if not 1 <= args.seq_len <= config.max_seq_len:
        raise UsageError(f"--seq-len {args.seq_len} must be between 1 and the model's max_seq_len {config.max_seq_len}")
    m, batch = args.microbatches, args.batch if args.batch is not None else args.microbatches
    if m < 1 or batch < 1:
        raise UsageError(f"--microbatches ({m}) and --batch ({batch}) must be >= 1")
    if batch % m:
        raise UsageError(f"--batch {batch} is not divisible by --microbatches {m}: every microbatch must hold the "
                         f"same number of sequences, so use a batch that is a multiple of {m}")
    if args.schedule == "1f1b" and m < world and not args.forward_sweep:
        raise UsageError(f"--schedule 1f1b needs at least as many microbatches as stages: --microbatches {m} < "
                         f"{world} stages (use --microbatches {world} or more, or --schedule gpipe)")
    if args.forward_sweep and v > 1:
        raise UsageError(f"--forward-sweep measures GPipe's forward, one stage per rank: drop --schedule "
                         f"{args.schedule}")
    try:
        check_schedule(args.schedule, world, m, v)
    except ValueError as e:
        raise UsageError(f"--schedule {args.schedule} with {world} processes and --microbatches {m}: {e}") from None
    if args.microbatch_size < 1 or args.repeats < 1:
        raise UsageError("--microbatch-size and --repeats must be >= 1")
    sweep_points(args.forward_sweep)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda but CUDA is not available here (use --device cpu)")
        if local_world > torch.cuda.device_count():
            raise UsageError(f"{local_world} processes on this host but only {torch.cuda.device_count()} GPUs: "
                             "one GPU per stage")
    if args.partition == "naive":
        return config, naive_partition(config, world * v)
    return config, partition(config, world * v, by=args.partition, seq_len=args.seq_len)


def main(argv=None) -> int:
    args = parse_args(argv)
    rank = int(os.environ.get("RANK", 0))
    try:
        rank, world, local_rank, local_world = dist_env()
        config, ranges = plan(args, world, local_world)
    except UsageError as e:
        if rank == 0:
            print(f"minids.pipeline: error: {e}", file=sys.stderr, flush=True)
        return 2

    import torch.distributed as dist

    if args.device == "cuda":
        os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast off (the lent GPU hosts need it)
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        from .session import run_session

        status = run_session(args, config, ranges, rank, world, device, DTYPES[args.dtype])
        # Tear down only once every rank is done and the schedules' last send/recv handles are gone: a gloo
        # work object outliving its process group aborts the process at exit ("terminate called ...").
        gc.collect()
        dist.barrier()
        return status
    finally:
        dist.destroy_process_group()
