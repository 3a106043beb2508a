"""Running an experiment's training runs side by side on one device, and the command line they share.

The models of the depth experiments are small: one run alone leaves an H200 waiting on kernel launches, so
hop_depth and window_reach start several runs at once, each in its own process (spawned: CUDA cannot be
forked), and hand every finished record back to the parent as soon as it ends, which writes it to the results
file at once. With one worker the runs go one after another in this process (CPU settings, tests).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing
import os
import shlex
import sys
import time
from dataclasses import asdict, replace
from typing import Any, Callable, Iterable

from .cli import check_out, nonnegative_float, nonnegative_int, positive_int


def run_side_by_side(worker: Callable[[Any], dict], jobs: Iterable[Any], workers: int,
                     done: Callable[[dict], None]) -> None:
    """Call done(worker(job)) for every job, `workers` at a time in spawned processes (in order, here, if 1)."""
    jobs = list(jobs)
    if workers <= 1:
        for job in jobs:
            done(worker(job))
        return
    context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        for future in cf.as_completed([pool.submit(worker, job) for job in jobs]):
            done(future.result())


def merge_refusal(path: str, previous, setting) -> str | None:
    """Why the file at `path` (its JSON: `previous`) cannot take this experiment's runs under --merge, or None:
    it must be this experiment's list of records (meta, train, verdict), whose settings have no field that
    this experiment's setting lacks (another experiment's file has its own fields)."""
    fields = set(asdict(setting))
    if not isinstance(previous, list) or not all(isinstance(r, dict) for r in previous):
        return (f"--merge: {path} does not hold a list of records (it holds a JSON {type(previous).__name__}); "
                "it is not this experiment's results file")
    kinds = sorted({str(r.get("record")) for r in previous} - {"meta", "train", "verdict"})
    foreign = sorted({k for r in previous if r.get("record") == "meta" for k in r.get("setting", {})} - fields)
    if kinds or foreign or not any(r.get("record") == "meta" for r in previous):
        what = (f"records of kind {kinds}" if kinds else f"settings with fields {foreign[:4]}" if foreign
                else "no meta record")
        return (f"--merge: {path} holds {what}, so another experiment (or another version) wrote it; merge "
                "only files of this experiment, or write to another --out")
    return None


def depth_experiment_main(argv, *, doc: str, module: str, out_stem: str, settings: dict,
                          run_experiment: Callable) -> None:
    """The command line of a depth experiment: pick a setting, override depths, seeds, steps, workers and the
    deadline, and write <out>/<out_stem>_<device>.json (merging with the file's other runs on --merge)."""
    import torch

    started = time.time()
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--setting", choices=sorted(settings), help="size preset (default: the device's type)")
    parser.add_argument("--out", default="data/results", help=f"folder for {out_stem}_<device>.json")
    parser.add_argument("--layers", type=positive_int, nargs="+", help="depths to run (default: the setting's)")
    parser.add_argument("--seeds", type=nonnegative_int, nargs="+", help="seeds to run (default: the setting's)")
    parser.add_argument("--steps", type=positive_int, help="training steps per run (default: the setting's)")
    parser.add_argument("--workers", type=positive_int, help="runs side by side (default: the setting's)")
    parser.add_argument("--deadline-s", type=nonnegative_float, help="stop runs this many seconds after the start")
    parser.add_argument("--merge", action="store_true", help="keep the file's records of runs not planned here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")
    setting = settings[args.setting or ("cuda" if device.type == "cuda" else "cpu")]
    changes = {k: v for k, v in (("layers", tuple(args.layers) if args.layers else None),
                                 ("seeds", tuple(args.seeds) if args.seeds else None), ("steps", args.steps),
                                 ("workers", args.workers), ("deadline_s", args.deadline_s)) if v is not None}
    bad = [d for d in changes.get("layers", ()) if d < 1]
    if bad:
        parser.error(f"--layers must be positive depths, got {bad}")
    setting = replace(setting, **changes)
    out_path = os.path.join(args.out, f"{out_stem}_{device.type}.json")
    check_out(parser, out_path, merge=args.merge)  # before any work: a bad --out never costs a run
    if args.merge and os.path.isfile(out_path):
        from ..files import read_json

        refusal = merge_refusal(out_path, read_json(out_path), setting)
        if refusal:
            parser.error(refusal)
    command = " ".join([f"python -m {module}"] + [shlex.quote(a) for a in sys.argv[1:]])
    run_experiment(setting, device, out_path, merge=args.merge, log=lambda s: print(s, flush=True),
                   meta={"command": command}, started=started)
