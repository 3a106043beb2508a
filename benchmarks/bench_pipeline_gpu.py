"""Pipeline-parallel DeepSeek LLM 67B on two GPUs against one GPU: forward throughput and memory per stage.

    python benchmarks/bench_pipeline_gpu.py --device cuda --out benchmarks/results     # 2 H200s, ~5 minutes
    python benchmarks/bench_pipeline_gpu.py --device cpu --quick --out /tmp/pp        # the same steps, tiny

Phases, each in its own process(es) so that one failure (or out-of-memory) cannot lose the others:
  1. correctness on the device: `torchrun --nproc-per-node 2 -m minids.pipeline --check` on the 95-layer
     miniature (float32), with GPipe and with 1F1B;
  2. the 67B preset in bf16 with random weights split over 2 GPUs (layers 0-47 + embedding, 48-94 + head):
     forward throughput with m = 1..8 microbatches of one sequence each (GPipe schedule), memory per stage;
  3. the baseline: the whole 67B on ONE GPU (134.85 GB of bf16 weights: it fits on an H200, whose 139 GiB
     usable = 149 GB leave ~14 GB; the measured peak was 138.8 GB), forward over the same batches of 1..8 sequences. If it does not fit, shallower
     slices of 32 and 64 layers are timed and the time of 95 layers is extrapolated linearly (recorded
     with "method": "extrapolated").
The records (benchmarks/records.py format) go to OUT/pipeline_gpu.json (pipeline_cpu.json with --device
cpu), the full console output to OUT/pipeline_gpu.log. Every phase has a deadline; the whole run is
bounded by --budget seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from benchmarks.records import median_time, record, write_records  # noqa: E402

LOG = None


def say(*parts) -> None:
    line = " ".join(str(p) for p in parts)
    print(line, flush=True)
    if LOG is not None:
        LOG.write(line + "\n")
        LOG.flush()


def run_logged(cmd: list[str], deadline_s: float) -> int:
    """Run cmd (its own process group), echo its output live, kill the group at the deadline. Returns rc."""
    say("+", " ".join(cmd))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), NCCL_NVLS_ENABLE="0")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    killer = threading.Timer(max(deadline_s, 1.0), lambda: os.killpg(proc.pid, signal.SIGKILL))
    killer.start()
    try:
        for line in proc.stdout:
            text = line.strip()
            if "OMP_NUM_THREADS" in text or not text.strip("*") or text.endswith("*****"):  # torchrun's banner
                continue
            say("  |", line.rstrip())
        return proc.wait()
    finally:
        killer.cancel()


def torchrun(nproc: int, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "-m", "minids.pipeline",
            *args]


def read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def baseline_worker(args) -> None:
    """Phase 3, in its own process: the whole model on one device, forward time per batch size."""
    from minids import DeepSeekLM, ModelConfig

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if device.type == "cpu":
        torch.set_num_threads(1)  # like each pipeline rank under torchrun: one CPU "device" = one thread
    config = ModelConfig.preset(args.preset)
    out = {"preset": args.preset, "seq_len": args.seq_len, "method": "full", "points": []}
    batches = [int(x) for x in args.sweep.split(",")]
    started = time.perf_counter()

    def time_model(n_layers: int) -> dict:
        model = DeepSeekLM(config.replace(n_layers=n_layers), device="meta", dtype=dtype).materialize(device).eval()
        weights = torch.cuda.memory_allocated(device) if device.type == "cuda" else None
        times = {}
        for b in batches:
            if time.perf_counter() - started > args.budget:
                say(f"  baseline: out of time budget, batch {b} and larger not measured")
                break
            ids = torch.randint(0, config.vocab_size, (b, args.seq_len), device=device)
            try:
                with torch.no_grad():
                    times[b] = median_time(lambda: model(ids, validate=False), device, warmup=1, repeats=args.repeats)
                say(f"  baseline ({n_layers} layers): batch {b}: {1e3 * times[b]:.1f} ms")
            except torch.cuda.OutOfMemoryError as e:
                say(f"  baseline ({n_layers} layers): batch {b}: out of memory ({str(e).splitlines()[0]})")
            if device.type == "cuda":
                torch.cuda.empty_cache()
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return {"times": times, "weights_bytes": weights, "peak_bytes": peak}

    full = None
    try:
        full = time_model(config.n_layers)
        out.update(weights_bytes=full["weights_bytes"], peak_bytes=full["peak_bytes"])
        out["points"] = [{"batch": b, "step_s": t} for b, t in full["times"].items()]
    except torch.cuda.OutOfMemoryError as e:
        say(f"  baseline: the whole model does not fit on one device ({str(e).splitlines()[0]}); extrapolating")
    if full is None:  # outside the except block, so the failed model's tensors are no longer referenced
        torch.cuda.empty_cache()
        lo, hi = args.slices
        t_lo, t_hi = time_model(lo)["times"], time_model(hi)["times"]
        out["method"] = f"extrapolated linearly from {lo} and {hi} layers"
        out["points"] = [{"batch": b, "step_s": t_lo[b] + (t_hi[b] - t_lo[b]) * (config.n_layers - lo) / (hi - lo)}
                         for b in batches if b in t_lo and b in t_hi]
    with open(args.worker_json, "w") as f:
        json.dump(out, f)


def main() -> int:
    global LOG
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    ap.add_argument("--quick", action="store_true", help="tiny sizes, to prove the script on a CPU")
    ap.add_argument("--preset", default="deepseek-llm-67b")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--sweep", default="1,2,3,4,5,6,7,8", help="microbatch counts (one sequence each)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--budget", type=float, default=400.0, help="seconds for the whole run")
    ap.add_argument("--slices", type=int, nargs=2, default=(32, 64), help="layer counts for the fallback baseline")
    ap.add_argument("--baseline-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker-json", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.preset, args.dtype, args.seq_len, args.sweep, args.repeats = "deepseek-llm-67b-mini", "float32", 16, "1,2,3", 1
        args.slices = (8, 16)
    if args.baseline_worker:
        baseline_worker(args)
        return 0

    start = time.perf_counter()
    left = lambda: args.budget - (time.perf_counter() - start)  # noqa: E731
    os.makedirs(args.out, exist_ok=True)
    name = "pipeline_gpu" if args.device == "cuda" else "pipeline_cpu"
    LOG = open(os.path.join(args.out, f"{name}.log"), "w")
    tmp = tempfile.mkdtemp(prefix="bench_pipeline_")
    dev = args.device
    records = []
    model = args.preset

    # 1. Correctness on this device and backend.
    for schedule, m in (("gpipe", 2), ("1f1b", 4)):
        path = os.path.join(tmp, f"check_{schedule}.json")
        rc = run_logged(torchrun(2, ["--preset", "deepseek-llm-67b-mini", "--device", dev, "--schedule", schedule,
                                     "--microbatches", str(m), "--batch", "4", "--seq-len", "64", "--check",
                                     "--repeats", "1", "--json", path]), min(150.0, left() - 200))
        rep = read_json(path)
        if rep is None or rep.get("check") is None:
            records.append(record("pipeline_check", "minids", "deepseek-llm-67b-mini", None, "pass", dev,
                                  schedule=schedule, error=f"exit status {rc}, no report"))
            continue
        c = rep["check"]
        records.append(record("pipeline_check", "minids", "deepseek-llm-67b-mini", float(c["passed"]), "pass", dev,
                              schedule=schedule, stages=2, microbatches=m, exit_status=rc,
                              **{f"err_{k}": c[k] for k in ("weights", "logits_eval", "logits_train", "loss", "grads")},
                              tolerance=c["tolerance"], forward_step_s=rep["forward_step_s"],
                              train_step_s=rep["train_step_s"]))
    write_records(os.path.join(args.out, f"{name}.json"), records)

    # 2. The pipeline: 2 stages, forward sweep over microbatch counts.
    path = os.path.join(tmp, "sweep.json")
    rc = run_logged(torchrun(2, ["--preset", model, "--device", dev, "--dtype", args.dtype, "--seq-len",
                                 str(args.seq_len), "--forward-sweep", args.sweep, "--microbatch-size", "1",
                                 "--repeats", str(args.repeats), "--time-budget", str(max(30.0, left() - 220)),
                                 "--json", path]), left() - 120)
    sweep = read_json(path)
    if sweep is None:
        records.append(record("pipeline_forward_throughput", "minids", model, None, "tokens/s", dev,
                              error=f"exit status {rc}, no results"))
    else:
        for s in sweep["stage_info"]:
            records.append(record("stage_weights_memory", "minids", model,
                                  s.get("weights_bytes_allocated"), "bytes", dev, stage=s["stage"],
                                  layers=s["layers"], params=s["params"], dtype=args.dtype,
                                  forward_ms_per_microbatch=s["forward_ms_per_microbatch"], seq_len=args.seq_len))
        for p in sweep["points"]:
            records.append(record("pipeline_forward_throughput", "minids", model, p["tokens_per_s"], "tokens/s", dev,
                                  setup="pipeline", stages=2, schedule="gpipe", microbatches=p["microbatches"],
                                  batch=p["batch"], seq_len=args.seq_len, step_s=p["step_s"], dtype=args.dtype,
                                  ranges=sweep["ranges"], peak_bytes_per_stage=p["peak_bytes_per_stage"],
                                  exit_status=rc))
    write_records(os.path.join(args.out, f"{name}.json"), records)

    # 3. The baseline on one device.
    path = os.path.join(tmp, "baseline.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--baseline-worker", "--worker-json", path, "--device", dev,
           "--preset", model, "--dtype", args.dtype, "--seq-len", str(args.seq_len), "--sweep", args.sweep,
           "--repeats", str(args.repeats), "--slices", *map(str, args.slices), "--budget", str(max(20.0, left() - 40))]
    rc = run_logged(cmd, left() - 5)
    base = read_json(path)
    if base is None:
        records.append(record("single_device_forward_throughput", "minids", model, None, "tokens/s", dev,
                              error=f"exit status {rc}, no results"))
    else:
        for p in base["points"]:
            records.append(record("single_device_forward_throughput", "minids", model,
                                  p["batch"] * args.seq_len / p["step_s"], "tokens/s", dev, setup="one device",
                                  batch=p["batch"], seq_len=args.seq_len, step_s=p["step_s"], dtype=args.dtype,
                                  method=base["method"], weights_bytes=base.get("weights_bytes"),
                                  peak_bytes=base.get("peak_bytes")))
    write_records(os.path.join(args.out, f"{name}.json"), records)
    say(f"wrote {len(records)} records to {os.path.join(args.out, name + '.json')} in {time.perf_counter() - start:.0f} s")
    LOG.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
