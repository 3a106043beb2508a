"""Every pipeline schedule of `minids.pipeline`, run for real on CPU processes (gloo) and checked.

    python benchmarks/bench_pipeline_schedules_cpu.py --out benchmarks/results     # about 10 minutes on 2 cores

Two sets of runs, each `torchrun --nproc-per-node P -m minids.pipeline --check --json ...` in its own
processes (one failure cannot lose the others):
  1. correctness: the `tiny` preset cut to 8 layers, every schedule on 2 and on 4 ranks, 8 microbatches:
     weights, logits, loss and every stage's gradients against the single-process DeepSeekLM;
  2. the 95-layer miniature (deepseek-llm-67b-mini, width 256) on 2 ranks, every schedule, 4 microbatches of
     one 16-token sequence: the check again, each stage's own forward time, the training step's time.
The CPU times say little about GPUs (at width 256 a layer is mostly Python and kernel-launch overhead,
and 2 or 4 processes share the machine's cores): each is a median of --repeats runs, recorded to compare
stages with each other, with that noise.
Records (benchmarks/records.py format) go to OUT/pipeline_schedules_cpu.json, one per run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.records import record, write_records  # noqa: E402
from minids.pipeline import SCHEDULES  # noqa: E402

CHECK = dict(preset="tiny", n_layers=8, microbatches=8, seq_len=16)
MINI = dict(preset="deepseek-llm-67b-mini", n_layers=None, microbatches=4, seq_len=16)


def run_one(schedule: str, ranks: int, setting: dict, timeout: float, repeats: int) -> dict:
    out = os.path.join(tempfile.mkdtemp(), "report.json")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "-m", "minids.pipeline",
           "--preset", setting["preset"], "--schedule", schedule, "--microbatches", str(setting["microbatches"]),
           "--seq-len", str(setting["seq_len"]), "--check", "--repeats", str(repeats), "--json", out]
    if setting["n_layers"]:
        cmd += ["--n-layers", str(setting["n_layers"])]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    print("+", " ".join(cmd[2:]), flush=True)
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        rc, tail = proc.returncode, (proc.stdout + proc.stderr)[-1500:]
    except subprocess.TimeoutExpired:
        rc, tail = 124, "timed out"
    report = json.load(open(out)) if os.path.exists(out) else None
    line = [l for l in (report and tail.splitlines() or []) if "check against" in l]
    print(f"  exit {rc}: {line[0] if line else tail[-400:]}", flush=True)
    return {"exit_status": rc, "report": report}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for pipeline_schedules_cpu.json")
    ap.add_argument("--schedules", default=",".join(SCHEDULES))
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per run")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats per run (medians), after a warm-up")
    args = ap.parse_args(argv)
    records = []
    path = os.path.join(args.out, "pipeline_schedules_cpu.json")
    plan = [(s, p, CHECK, "tiny-8") for p in (2, 4) for s in args.schedules.split(",")]
    plan += [(s, 2, MINI, "mini") for s in args.schedules.split(",")]
    for schedule, ranks, setting, label in plan:
        res = run_one(schedule, ranks, setting, args.timeout, args.repeats)
        r, check = res["report"], (res["report"] or {}).get("check") or {}
        records.append(record(
            "pipeline_schedule_check", "minids", setting["preset"], 1.0 if check.get("passed") else 0.0, "pass",
            "cpu", schedule=schedule, ranks=ranks, setting=label, n_layers=r and r["n_layers"],
            microbatches=setting["microbatches"], seq_len=setting["seq_len"], repeats=args.repeats,
            exit_status=res["exit_status"],
            ranges=r and r["ranges"], stage_info=r and r["stage_info"], train_step_s=r and r["train_step_s"],
            forward_step_s=r and r.get("forward_step_s"), loss=r and r.get("loss"),
            errors={k: check.get(k) for k in ("weights", "logits_eval", "logits_train", "loss", "grads", "tolerance")},
        ))
        write_records(path, records)  # after every run: an interrupted sweep keeps what it measured
    failed = [f"{r['schedule']}/{r['ranks']}/{r['setting']}" for r in records if r["value"] != 1.0]
    print(f"{len(records) - len(failed)} of {len(records)} runs passed" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
