"""Batch-1 decode and prefill on the CPU: minids.generate beside transformers' generate, same weights.

    python benchmarks/bench_decode_cpu.py                 # writes benchmarks/results/decode_cpu.json
    python benchmarks/bench_decode_cpu.py --quick         # a smoke run (few tokens, 1 repeat), no file
    python benchmarks/bench_decode_cpu.py --profile       # also print where minids' decode step spends time
    python benchmarks/bench_decode_cpu.py --no-compile    # only the eager paths (no C++ compiler needed)

Models (DeepSeek-shaped: GQA 8:1, SwiGLU with the 8/3 rule, untied lm_head, float32):
    gqa8-12x256  12 layers x d_model 256 (the 95-layer miniature's layer, 12 times)   ~10M parameters
    gqa8-100m    16 layers x d_model 768, 16 query / 2 KV heads, vocab 8192            ~110M parameters
Each minids model lends its very weight tensors to a transformers LlamaForCausalLM (benchmarks/hf_twin.py),
and both generate greedily from the same prompt; the token ids must agree. The paths are timed alternately in the same
process (median of repeats), so a busy machine slows all alike. minids is measured twice for decode:
`generate` (the readable eager path) and `StaticDecoder(capture="compile")` (the static decode step through
torch.compile with Inductor's freezing + max-autotune, see minids/static_cache.py; its compile time and the
process's memory growth while compiling are printed and recorded, not counted in the speed). transformers is
measured twice too: `generate` as shipped, and `generate(cache_implementation="static")` with its forward
compiled under the same Inductor settings (what a user would have to set up by hand; on a CPU transformers
does not compile by default), so that what minids' own code adds is visible apart from what Inductor adds.
Decode tokens/s = new tokens / generate time with a short prompt (8 tokens, so prefill is a small part).
Prefill tokens/s = one forward over 512 tokens (no cache on either side), measured for minids eager, minids under
`torch.compile(model)`, transformers eager and transformers under `torch.compile(hf_model)` (so that what
compiling alone buys is visible for both). One thread by default: batch-1 decode is a chain of small
matrix-vector products, and on a shared machine more threads mostly wait for each other.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch._inductor.config as inductor_config

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hf_twin import hf_twin  # noqa: E402
from records import record, write_records  # noqa: E402

from minids import DeepSeekLM, ModelConfig  # noqa: E402
from minids.generate import generate  # noqa: E402
from minids.static_cache import CPU_DECODE_INDUCTOR, StaticDecoder  # noqa: E402

MODELS = {
    "gqa8-12x256": ModelConfig.preset("deepseek-llm-67b-mini").replace(n_layers=12),
    "gqa8-100m": ModelConfig(vocab_size=8192, d_model=768, n_layers=16, n_heads=16, n_kv_heads=2, d_ff=2048,
                             max_seq_len=1024),
}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternate(fns: dict, repeats: int, warmup: int = 1) -> dict:
    """Median seconds of each function, called in turn (a, b, a, b, ...) after a warm-up of each."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn))
    return {name: statistics.median(ts) for name, ts in times.items()}


def rss_mb() -> float:
    """This process's resident memory (Linux /proc; 0 elsewhere), to show what compiling the CPU step costs."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0.0


def memory_probe(threads: int) -> list[dict]:
    """How fast this machine reads memory, and how fast a batch-1 matrix product does, at `threads`.

    stream: one sum over 400 MB of float32 (the most a single pass can read per second). gemv: F.linear of
    one vector with the 100M model's largest matrices (2048 x 768), 32 different ones in turn so that they
    come from memory rather than the cache: what the default BLAS path (MKL) reaches at batch 1.
    """
    big = torch.randn(100_000_000)
    stream_s = min(timed(big.sum) for _ in range(5))
    weights = [torch.randn(2048, 768) for _ in range(32)]
    x = torch.randn(1, 768)
    gemv_s = min(timed(lambda: [torch.nn.functional.linear(x, w) for w in weights]) for _ in range(5))
    gemv_bytes = sum(w.numel() * w.element_size() for w in weights)
    extra = dict(threads=threads, dtype="float32")
    return [record("memory_read_GBps", "probe", "stream (sum over 400 MB)", round(big.nbytes / stream_s / 1e9, 1),
                   "GB/s", "cpu", variant="stream", **extra),
            record("memory_read_GBps", "probe", "gemv (32 x 2048x768, MKL)", round(gemv_bytes / gemv_s / 1e9, 1),
                   "GB/s", "cpu", variant="gemv", **extra)]


def profile_decode(model: DeepSeekLM, steps: int = 30) -> None:
    cache = model.new_kv_cache(1, 64 + steps)
    token = torch.zeros(1, 1, dtype=torch.long)
    with torch.inference_mode():
        model(torch.zeros(1, 64, dtype=torch.long), cache)
        with torch.profiler.profile() as prof:
            for _ in range(steps):
                model(token, cache, last_only=True, validate=False)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15), flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt", type=int, default=8, help="prompt length for the decode measurement")
    parser.add_argument("--prefill", type=int, default=512, help="tokens of the prefill measurement")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="8 new tokens, 64-token prefill, 1 repeat, no file")
    parser.add_argument("--no-compile", action="store_true",
                        help="skip minids' torch.compiled static step (needs a C++ compiler; ~1 min to compile)")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of minids decode")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                      "decode_cpu.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.new_tokens, args.prefill, args.repeats = 8, 64, 1
    torch.set_num_threads(args.threads)
    records = [] if args.quick else memory_probe(args.threads)
    for r in records:
        print(f"memory read, {r['model']}: {r['value']} GB/s", flush=True)
    for name in args.models:
        cfg = MODELS[name]
        torch.manual_seed(0)
        model = DeepSeekLM(cfg, device="cpu").eval()
        hf = hf_twin(model).eval()  # the same weight tensors, no second copy
        n_params = model.num_parameters()
        # What a decode step streams: every matrix once, one row of the embedding table (float32).
        weight_bytes = 4 * (n_params - model.embed_tokens.weight.numel() + cfg.d_model)
        print(f"{name}: {n_params / 1e6:.1f}M parameters, {cfg.n_layers} layers, d_model {cfg.d_model}, "
              f"{cfg.attention_kind}, {args.threads} thread(s)", flush=True)
        prompt = torch.randint(0, cfg.vocab_size, (1, args.prompt))
        long_prompt = torch.randint(0, cfg.vocab_size, (1, args.prefill))

        ours = generate(model, prompt, args.new_tokens)
        theirs = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=args.new_tokens,
                             do_sample=False)
        same = torch.equal(ours, theirs)
        print(f"  greedy token ids equal: {same}", flush=True)

        runs = {
            "minids": lambda: generate(model, prompt, args.new_tokens),
            "transformers": lambda: hf.generate(prompt, attention_mask=torch.ones_like(prompt),
                                                max_new_tokens=args.new_tokens, do_sample=False),
        }
        compile_info, hf_compile_info, compiled_same, hf_static_same = {}, {}, None, None
        if not args.no_compile:  # the fast path: the static decode step, compiled (compile time not counted)
            rss_before, t0 = rss_mb(), time.perf_counter()
            decoder = StaticDecoder(model, 1, args.prompt + args.new_tokens, capture="compile")
            compiled_same = torch.equal(decoder.generate(prompt, args.new_tokens), ours)
            compile_info = dict(compile_s=round(time.perf_counter() - t0, 1),
                                rss_growth_mb=round(rss_mb() - rss_before))
            print(f"  compiled static step: {compile_info['compile_s']:.0f} s to compile, process memory "
                  f"+{compile_info['rss_growth_mb']} MB (weights: {4 * n_params / 2**20:.0f} MB); same tokens: "
                  f"{compiled_same}", flush=True)
            runs["minids-compiled"] = lambda: decoder.generate(prompt, args.new_tokens)
            # transformers on the same terms: its own static cache, its forward compiled with the same Inductor
            # settings (not what it does by default on a CPU, where a static cache alone changes nothing)
            hf_fast = hf_twin(model).eval()
            hf_fast.forward = torch.compile(hf_fast.forward, fullgraph=True)

            def hf_static():
                with inductor_config.patch(**CPU_DECODE_INDUCTOR):
                    return hf_fast.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                            max_new_tokens=args.new_tokens, cache_implementation="static")

            rss_before, t0 = rss_mb(), time.perf_counter()
            hf_static_same = torch.equal(hf_static(), theirs)
            hf_compile_info = dict(compile_s=round(time.perf_counter() - t0, 1),
                                   rss_growth_mb=round(rss_mb() - rss_before))
            print(f"  transformers, static cache + the same compile: {hf_compile_info['compile_s']:.0f} s to "
                  f"compile, process memory +{hf_compile_info['rss_growth_mb']} MB; same tokens: {hf_static_same}",
                  flush=True)
            runs["transformers-compiled"] = hf_static
        decode = alternate(runs, args.repeats)
        with torch.inference_mode():
            prefill_runs = {"minids": lambda: model(long_prompt),
                            "transformers": lambda: hf(long_prompt, use_cache=False)}
            if not args.no_compile:  # torch.compile of each whole model, as a user would write it
                model_c, hf_c = torch.compile(model), torch.compile(hf)
                t0 = time.perf_counter()
                ours_c, theirs_c = model_c(long_prompt, validate=False), hf_c(long_prompt, use_cache=False).logits
                prefill_same = float((ours_c - theirs_c).norm() / theirs_c.norm())
                print(f"  prefill, both compiled: {time.perf_counter() - t0:.0f} s to compile; relative "
                      f"difference of the logits {prefill_same:.1e}", flush=True)
                prefill_runs["minids-compiled"] = lambda: model_c(long_prompt, validate=False)
                prefill_runs["transformers-compiled"] = lambda: hf_c(long_prompt, use_cache=False)
            prefill = alternate(prefill_runs, args.repeats)
        extra = dict(batch=1, threads=args.threads, n_params=n_params, dtype="float32")
        decode_paths = {  # key -> (impl, path, same tokens as transformers' eager generate, compile info)
            "minids": ("minids", "eager", same, {}),
            "transformers": ("transformers", "eager", True, {}),
            "minids-compiled": ("minids", "compiled static step", compiled_same, compile_info),
            "transformers-compiled": ("transformers", "static cache + same compile", hf_static_same,
                                      hf_compile_info),
        }
        for key in decode:
            impl, path, same_key, info = decode_paths[key]
            dec = args.new_tokens / decode[key]
            print(f"  {key:>21}: decode  {dec:9.1f} tok/s", flush=True)
            records.append(record("decode_tok_s", impl, name, round(dec, 2), "tokens/s", "cpu", path=path,
                                  variant=path, prompt_len=args.prompt, new_tokens=args.new_tokens,
                                  same_tokens_as_transformers=same_key, weight_bytes_per_token=weight_bytes,
                                  **info, **extra))
        for key in prefill:
            impl, path = (key.split("-")[0], "torch.compile") if key.endswith("-compiled") else (key, "eager")
            pre = args.prefill / prefill[key]
            print(f"  {key:>21}: prefill {pre:9.1f} tok/s", flush=True)
            records.append(record("prefill_tok_s", impl, name, round(pre, 1), "tokens/s", "cpu", path=path,
                                  variant=path, seq_len=args.prefill, **extra))
        ratios = ", ".join(f"{k} {decode['transformers'] / decode[k]:.2f}x" for k in decode if k != "transformers")
        pre_ratios = ", ".join(f"{k} {prefill['transformers'] / prefill[k]:.2f}x"
                               for k in prefill if k != "transformers")
        print(f"  against transformers' eager: decode {ratios}; prefill {pre_ratios}", flush=True)
        if "transformers-compiled" in decode:
            print(f"  compiled against compiled: decode minids "
                  f"{decode['transformers-compiled'] / decode['minids-compiled']:.2f}x", flush=True)
        if args.profile:
            profile_decode(model)
    if not args.quick:
        write_records(args.out, records)
        print(f"wrote {len(records)} records to {args.out}", flush=True)


if __name__ == "__main__":
    main()
