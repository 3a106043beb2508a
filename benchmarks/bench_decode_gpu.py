"""Batch-1 decode of the 7B (and, with --with-67b, the 67B) on one GPU, against the memory-bandwidth floor.

    python benchmarks/bench_decode_gpu.py --device cuda --out benchmarks/results              # 7B
    python benchmarks/bench_decode_gpu.py --device cuda --with-67b --out benchmarks/results   # 7B, then 67B
    python benchmarks/bench_decode_gpu.py --device cpu --preset tiny --big-preset deepseek-llm-67b-mini \\
        --with-67b --dtype fp32 --new-tokens 16 --threads 1 --out /tmp/decode_gpu_check      # a CPU check
    python benchmarks/bench_decode_gpu.py --device cuda --with-67b --only fused --out benchmarks/results
                            # only the fused variants (7B graph+fused, compile+fused; 67B graph+fused): ~2.5 min

At batch 1 every decode step reads every weight once, so the fastest possible step takes
weight bytes / memory bandwidth: 13.8 GB / 4.3 TB/s = 3.2 ms for the 7B in bf16 (the floor). This script
measures, on random bf16 weights created directly on the GPU:

    minids eager    generate(): the readable cached path, one Python-launched kernel at a time
    minids graph    StaticDecoder(capture="graph", fuse=False): the static step recorded once in a CUDA graph
    minids compile  StaticDecoder(capture="compile", fuse=False): torch.compile(mode="reduce-overhead")
    minids graph+fused, compile+fused   the same with fuse=True: minids.static_cache.fuse_projections stacks
                    each layer's q/k/v and gate/up weights into one matrix each (the parameters become views
                    of it, no second copy), so a step runs 4 larger GEMVs per layer instead of 7 small ones
    transformers    LlamaForCausalLM.generate(do_sample=False) on the same tensors (7B only)

and checks that the fast paths produce the greedy tokens of the readable path. Decode time per token is
(time for N new tokens - time for 1 new token) / (N - 1): the prefill and the first token cancel out.
Every measurement is isolated (a failure or a time-out is recorded and the next one runs), results are
rewritten atomically after each one, and the whole run stops itself after --time-budget seconds.
Records: metrics "decode_tok_s", "decode_ms_per_token", "decode_frac_of_bandwidth_floor" (and
"greedy_tokens_equal_readable"), with "path" and, for minids, "variant" = eager | graph | compile |
graph+fused | compile+fused (static | static+fused on a CPU). They are MERGED into <out>/decode_gpu.json: a
record replaces an earlier one with the same (metric, impl, model, path), every other earlier record is kept
(--fresh starts the file over). The log: <out>/decode_gpu.log (<out>/decode_gpu_fused.log with --only fused).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import signal
import sys
import time
import traceback

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hf_twin import hf_twin  # noqa: E402
from records import record, write_records  # noqa: E402

from minids import DeepSeekLM, ModelConfig  # noqa: E402
from minids.results import median_time  # noqa: E402
from minids.generate import generate  # noqa: E402
from minids.static_cache import StaticDecoder, fuse_projections  # noqa: E402

START = time.perf_counter()
LOG = None


def log(msg: str) -> None:
    line = f"[{time.perf_counter() - START:6.1f}s] {msg}"
    print(line, flush=True)
    if LOG is not None:
        LOG.write(line + "\n")
        LOG.flush()


class StageTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise StageTimeout in this (main) thread after `seconds`; no-op where SIGALRM does not exist."""
    if not hasattr(signal, "SIGALRM") or seconds <= 0:
        yield
        return

    def handler(signum, frame):
        raise StageTimeout(f"stage ran past its {seconds:.0f} s limit")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def seconds_per_token(run, n: int, device, repeats: int) -> float:
    """(median time of run(n) - median time of run(1)) / (n - 1), after one warm-up of each."""
    run(1), run(n)  # warm-up (and compilation, for the compiled path)
    median = lambda k: median_time(lambda: run(k), device, warmup=0, repeats=repeats)  # noqa: E731
    return max(median(n) - median(1), 1e-9) / (n - 1)


def record_key(r: dict) -> tuple:
    return r.get("metric"), r.get("impl"), r.get("model"), r.get("path")


class Bench:
    def __init__(self, args):
        self.args, self.records, self.failures, self.stages = args, [], [], set()
        self.path = os.path.join(args.out, "decode_gpu.json")
        self.earlier, self.earlier_failures = [], []
        if os.path.exists(self.path) and not args.fresh:  # merge: keep what this run does not measure again
            for r in json.load(open(self.path)):
                if "failures" in r:
                    self.earlier_failures += r["failures"]
                else:
                    if r.get("impl") == "minids" and "variant" not in r and "path" in r:
                        r["variant"] = r["path"]  # records written before "variant" existed
                    self.earlier.append(r)
            log(f"merging into {self.path}: {len(self.earlier)} earlier records")

    def remaining(self) -> float:
        return self.args.time_budget - (time.perf_counter() - START)

    def stage(self, name: str, fn, limit: float) -> object:
        """Run one measurement under min(limit, remaining budget); record a failure instead of raising."""
        budget = min(limit, self.remaining() - 5)
        if budget < 10:
            log(f"SKIP {name}: only {self.remaining():.0f} s of the time budget left")
            self.stages.add(name)
            self.failures.append({"stage": name, "error": "skipped: time budget exhausted"})
            return None
        self.stages.add(name)
        log(f"start {name} (limit {budget:.0f} s)")
        try:
            with time_limit(budget):
                return fn()
        except Exception as err:  # noqa: BLE001 - one failure must not lose the other measurements
            log(f"FAILED {name}: {type(err).__name__}: {err}")
            if not isinstance(err, StageTimeout):
                log(traceback.format_exc(limit=6))
            self.failures.append({"stage": name, "error": f"{type(err).__name__}: {err}"[:500]})
            return None
        finally:
            self.save()

    def add(self, impl, model_name, path, sec_per_token, weight_bytes, **extra):
        floor = weight_bytes / self.args.bandwidth
        common = dict(batch=1, path=path, new_tokens=self.args.new_tokens, prompt_len=self.args.prompt,
                      weight_bytes=weight_bytes, bandwidth_B_s=self.args.bandwidth, floor_ms=round(floor * 1e3, 3),
                      dtype=self.args.dtype, **extra)
        if impl == "minids":
            common["variant"] = path
        dev = self.args.device
        self.records += [
            record("decode_tok_s", impl, model_name, round(1 / sec_per_token, 2), "tokens/s", dev, **common),
            record("decode_ms_per_token", impl, model_name, round(sec_per_token * 1e3, 3), "ms", dev, **common),
            record("decode_frac_of_bandwidth_floor", impl, model_name, round(floor / sec_per_token, 4),
                   "fraction", dev, **common),
        ]
        log(f"  {impl} {path} {model_name}: {sec_per_token * 1e3:.2f} ms/token, {1 / sec_per_token:.1f} tok/s, "
            f"{floor / sec_per_token:.1%} of the bandwidth floor ({floor * 1e3:.2f} ms)")
        self.save()

    def save(self):
        """Earlier records (minus those measured again now) + this run's, and the failures of both."""
        new = {record_key(r) for r in self.records}
        kept = [r for r in self.earlier if record_key(r) not in new]
        failures = [f for f in self.earlier_failures if f.get("stage") not in self.stages] + self.failures
        write_records(self.path, kept + self.records + ([{"failures": failures}] if failures else []))


def build(preset: str, device, dtype) -> DeepSeekLM:
    """Random weights, created once, directly on the device in the final dtype (no CPU copy)."""
    torch.manual_seed(0)
    model = DeepSeekLM(ModelConfig.preset(preset), device="meta", dtype=dtype)
    return model.materialize(device).eval()


def check_fast_path(bench, model, name, prompt, decoder, label, steps=8):
    """Greedy tokens of the captured static path vs the readable cached path (bf16 may break near-ties)."""
    plain = generate(model, prompt, steps)
    fast = decoder.generate(prompt, steps)
    t = prompt.shape[1]
    agree = int((plain[0, t:] == fast[0, t:]).cumprod(0).sum())
    with torch.inference_mode():
        top2 = model(plain[:, :-1], last_only=True)[0, -1].float().topk(2).values
    log(f"  {name} {label}: first {agree} of {steps} greedy tokens equal the readable path "
        f"(last step's top-2 logit margin {float(top2[0] - top2[1]):.4f})")
    bench.records.append(record("greedy_tokens_equal_readable", "minids", name, agree, "tokens", bench.args.device,
                                path=label, variant=label, steps=steps))
    return agree


def fuse_in_place(model, device) -> dict:
    """fuse_projections, timed, with the extra memory it took at its peak (one layer's projections)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated() if device.type == "cuda" else 0
    t = time.perf_counter()
    fuse_projections(model)
    sync(device)
    info = {"fuse_s": round(time.perf_counter() - t, 3)}
    if device.type == "cuda":
        info["fuse_peak_extra_GB"] = round((torch.cuda.max_memory_allocated() - before) / 1e9, 3)
        info["fuse_after_minus_before_GB"] = round((torch.cuda.memory_allocated() - before) / 1e9, 3)
    log(f"  fuse_projections: {info}")
    return info


def run_model(bench: Bench, preset: str, captures: list[str], with_hf: bool, eager: bool = True) -> None:
    """captures: labels "none" | "graph" | "compile", each optionally "+fused" (the fused ones run last)."""
    args, device = bench.args, torch.device(bench.args.device)
    dtype = getattr(torch, {"bf16": "bfloat16", "fp32": "float32", "fp16": "float16"}[args.dtype])
    t0 = time.perf_counter()
    model = build(preset, device, dtype)
    sync(device)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    log(f"{preset}: {weight_bytes / 1e9:.2f} GB of weights materialised on {device} in "
        f"{time.perf_counter() - t0:.1f} s; floor {weight_bytes / args.bandwidth * 1e3:.2f} ms/token")
    prompt = torch.randint(0, model.config.vocab_size, (1, args.prompt), device=device)
    n = args.new_tokens
    max_len = args.prompt + n

    # The readable path: few tokens are enough, it is slow.
    n_eager = min(n, args.eager_tokens)
    if eager:
        spt = bench.stage(f"{preset} minids eager", lambda: seconds_per_token(
            lambda k: generate(model, prompt, k), n_eager, device, repeats=1), limit=120)
        if spt:
            bench.add("minids", preset, "eager", spt, weight_bytes, measured_tokens=n_eager)
    fuse_info = {}

    def measure_capture(label):
        capture, fuse = label.split("+")[0], label.endswith("+fused")
        path = label.replace("none", "static")

        def measure():
            if fuse and not fuse_info:  # once per model; the unfused variants ran before (fuse=False)
                fuse_info.update(fuse_in_place(model, device))
            decoder = StaticDecoder(model, 1, max_len, capture=capture, fuse=fuse)
            t = time.perf_counter()
            decoder.generate(prompt, 2)  # records the CUDA graph / compiles
            sync(device)
            log(f"  {path}: first call (capture/compile) {time.perf_counter() - t:.1f} s")
            check_fast_path(bench, model, preset, prompt, decoder, path)
            return seconds_per_token(lambda k: decoder.generate(prompt, k), n, device, repeats=args.repeats)

        if capture == "compile":  # a fresh compiler state: no earlier compiled step's guards or graphs
            torch._dynamo.reset()
            gc.collect()
        spt = bench.stage(f"{preset} minids {path}", measure, limit=170 if capture == "compile" else 120)
        if spt:
            bench.add("minids", preset, path, spt, weight_bytes, fused=fuse, **(fuse_info if fuse else {}))
        gc.collect()

    # The cheap measurements first, torch.compile (slow to compile) last, so a slow compile loses nothing else;
    # unfused before fused (fusing re-homes the weights; fuse=False steps would still run, on the views).
    order = sorted(captures, key=lambda c: (c.startswith("compile"), c.endswith("+fused")))
    for label in [c for c in order if not c.startswith("compile")]:
        measure_capture(label)
    if with_hf:
        def hf_measure():
            hf = hf_twin(model).eval()  # the same weight tensors, no second copy

            def run(k):
                with torch.inference_mode():
                    return hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=k,
                                       min_new_tokens=k, do_sample=False)

            ours = generate(model, prompt, min(n, 32))
            theirs = run(min(n, 32))
            same = int((ours[0, args.prompt:] == theirs[0, args.prompt:]).cumprod(0).sum())
            log(f"  transformers: first {same} of {min(n, 32)} greedy tokens equal minids' readable path")
            spt = seconds_per_token(run, n, device, repeats=1)
            bench.add("transformers", preset, "generate", spt, weight_bytes, same_leading_tokens=same)
            del hf

        bench.stage(f"{preset} transformers generate", hf_measure, limit=150)
    for label in [c for c in order if c.startswith("compile")]:
        measure_capture(label)
    del model
    torch._dynamo.reset()  # compiled code and its CUDA graphs hold the weights: let them go before the 67B
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        log(f"  GPU memory still allocated after freeing {preset}: {torch.cuda.memory_allocated() / 1e9:.2f} GB")


def main(argv=None) -> None:
    global LOG
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--preset", default="deepseek-llm-7b")
    p.add_argument("--big-preset", default="deepseek-llm-67b", help="the model of --with-67b")
    p.add_argument("--with-67b", action="store_true", help="after the 7B, free it and run --big-preset too")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--prompt", type=int, default=16)
    p.add_argument("--eager-tokens", type=int, default=32, help="new tokens for the (slow) readable path")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile (e.g. on a CPU)")
    p.add_argument("--no-hf", action="store_true", help="skip transformers' generate")
    p.add_argument("--big-compile", action="store_true", help="also torch.compile the 67B (slow to compile)")
    p.add_argument("--only", default="all", choices=["all", "fused"],
                   help="fused: only the fused variants (7B graph+fused and compile+fused, 67B graph+fused), "
                        "each with its greedy check against the readable path; no eager or transformers timing")
    p.add_argument("--fresh", action="store_true", help="replace <out>/decode_gpu.json instead of merging into it")
    p.add_argument("--bandwidth", type=float, default=4.3e12, help="memory bandwidth in B/s for the floor")
    p.add_argument("--time-budget", type=float, default=400, help="seconds for the whole run")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (1 for a CPU check on a busy machine)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    LOG = open(os.path.join(args.out, "decode_gpu.log" if args.only == "all" else "decode_gpu_fused.log"), "w")
    log(f"torch {torch.__version__}, device {args.device}"
        + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""))
    bench = Bench(args)
    on_gpu = torch.device(args.device).type == "cuda"
    compile_ = [] if args.no_compile else ["compile"]
    plain = (["graph"] + compile_) if on_gpu else ["none"]
    big = (["graph"] + (compile_ if args.big_compile else [])) if on_gpu else ["none"]
    fused_only = args.only == "fused"
    with_fused = lambda caps: ([] if fused_only else caps) + [c + "+fused" for c in caps]  # noqa: E731
    runs = [(args.preset, with_fused(plain), not args.no_hf and not fused_only)]
    if args.with_67b:  # after the 7B and its transformers twin are freed: the 67B needs ~135 GB
        runs.append((args.big_preset, with_fused(big), False))
    for preset, caps, with_hf in runs:
        try:
            run_model(bench, preset, caps, with_hf, eager=not fused_only)
        except Exception as err:  # noqa: BLE001 - e.g. out of memory while materialising
            log(f"FAILED {preset}: {type(err).__name__}: {err}")
            bench.failures.append({"stage": preset, "error": f"{type(err).__name__}: {err}"[:500]})
            gc.collect()
            if on_gpu:
                torch.cuda.empty_cache()
    bench.save()
    merged = f" (merged with {len(bench.earlier)} earlier records)" if bench.earlier else ""
    log(f"done: {len(bench.records)} records measured now, {len(bench.failures)} failures -> {bench.path}{merged}")


if __name__ == "__main__":
    main()
