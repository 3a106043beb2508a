"""GQA's inference dividend: batched decode against batch size, MHA vs GQA, each against its bandwidth floor.

    python benchmarks/bench_batched_decode.py --device cuda --out benchmarks/results      # one H200, ~4 min
    python benchmarks/bench_batched_decode.py --device cpu --preset tiny --big-preset deepseek-llm-67b-mini \\
        --dtype fp32 --contexts 32 64 --batches 1 2 4 --steps 4 --no-hf --out /tmp/batched   # a CPU check

At batch 1 a decode step reads every weight once and the KV cache is small beside them. Serving B sequences
of context T, one step reads the weights once (shared by all rows) and every row's cache:

    bytes per step = weight bytes + B * kv_cache_bytes(config, T)          floor = bytes / bandwidth

so the cache, which GQA shrinks by n_heads / n_kv_heads, is what grows with B. Measured here on random
bf16 weights created on the device (the speed of a step does not depend on the numbers):

    minids graph    StaticDecoder(capture="graph", fuse=True): the static step recorded as a CUDA graph, over
                    a cache holding T random positions (filled directly: a prefill of B x T tokens would take
                    longer than the measurement and changes nothing in the step)
    transformers    LlamaForCausalLM.generate(do_sample=False) on the same weight tensors, B random prompts
                    of T tokens with an all-ones attention mask: (time for N + 1 new tokens - time for 1) / N

for the 7B as published (32 KV heads: MHA), the same 7B with 8 and with 4 KV heads (GQA), and the 67B (GQA,
8 KV heads) at the batches its ~135 GB of weights leave room for; "the 67B if it were MHA" is computed
(how many 4K-token caches of 64 KV heads fit beside its weights). Each (model, context, batch) is one record
set, written as soon as it is measured: metrics decode_tok_s, decode_ms_per_step,
decode_frac_of_bandwidth_floor, with fields batch, context, kv_heads, weight_bytes, kv_bytes, floor_ms.
A batch whose cache does not fit is recorded as skipped (metric "does_not_fit"), not silently dropped.
File: <out>/batched_decode_gpu.json (replaced), log <out>/batched_decode_gpu.log.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from records import record, write_records  # noqa: E402

from minids import DeepSeekLM, ModelConfig, kv_cache_bytes  # noqa: E402
from minids.static_cache import StaticDecoder  # noqa: E402

START = time.perf_counter()


def log(msg: str, out=None) -> None:
    line = f"[{time.perf_counter() - START:6.1f}s] {msg}"
    print(line, flush=True)
    if out is not None:
        out.write(line + "\n")
        out.flush()


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def free_bytes(device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info()
        return free
    return 8 * 2**30  # a CPU check: pretend 8 GiB


def step_seconds(decoder: StaticDecoder, context: int, steps: int, repeats: int, device) -> float:
    """Median seconds of one decode step reading `context` cached positions, over `repeats` runs of `steps` steps."""
    batch = decoder.cache.batch
    token = torch.zeros(batch, 1, dtype=torch.long, device=device)
    pos = torch.full((1,), context - 1, dtype=torch.long, device=device)  # the last slot: context keys read
    decoder.step(token, pos)  # warm-up (and, for capture="compile", compilation)
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        for _ in range(steps):  # the same position every step: same bytes read, nothing grows
            decoder.step(token, pos)
        sync(device)
        times.append((time.perf_counter() - t) / steps)
    return sorted(times)[len(times) // 2]


def hf_step_seconds(hf, batch: int, context: int, steps: int, vocab: int, device) -> float:
    prompt = torch.randint(0, vocab, (batch, context), device=device)

    def run(k):
        with torch.inference_mode():
            hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=k, min_new_tokens=k,
                        do_sample=False)
        sync(device)

    run(2)  # warm-up
    t = time.perf_counter(); run(1); one = time.perf_counter() - t
    t = time.perf_counter(); run(steps + 1); many = time.perf_counter() - t
    return max(many - one, 1e-9) / steps


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--preset", default="deepseek-llm-7b")
    p.add_argument("--kv-heads", type=int, nargs="+", default=[32, 8, 4], help="variants of --preset")
    p.add_argument("--big-preset", default="deepseek-llm-67b")
    p.add_argument("--no-big", action="store_true")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--contexts", type=int, nargs="+", default=[2048, 4096])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64, 128])
    p.add_argument("--attn", nargs="+", default=["sdpa", "einsum"], choices=["sdpa", "einsum"],
                   help="the static step's decode attention: the fused kernel and/or two batched products")
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-hf", action="store_true")
    p.add_argument("--hf-max-batch", type=int, default=64, help="transformers' generate up to this batch")
    p.add_argument("--bandwidth", type=float, default=4.3e12)
    p.add_argument("--reserve-gb", type=float, default=3.0, help="memory left free for activations")
    p.add_argument("--deadline-s", type=float, default=480)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    path = os.path.join(args.out, "batched_decode_gpu.json")
    logf = open(os.path.join(args.out, "batched_decode_gpu.log"), "w")
    records: list[dict] = []
    say = lambda m: log(m, logf)  # noqa: E731
    say(f"torch {torch.__version__}, {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}")

    def add(metric, impl, model, value, unit, **extra):
        records.append(record(metric, impl, model, value, unit, device, **extra))

    def add_decode(impl, model, batch, sec, floor, fields):
        """The three records of one measured step: tokens/s, ms per step, and the fraction of the floor."""
        add("decode_tok_s", impl, model, round(batch / sec, 1), "tokens/s", **fields)
        add("decode_ms_per_step", impl, model, round(sec * 1e3, 3), "ms", **fields)
        add("decode_frac_of_bandwidth_floor", impl, model, round(floor / sec, 4), "fraction", **fields)

    def left() -> float:
        return args.deadline_s - (time.perf_counter() - START)

    def measure(model, preset, name, batch, context, max_len, floor, attn, fields) -> None:
        """One (model, context, batch, attention) point: a recorded CUDA graph over a random cache."""
        fields = dict(fields, decode_attention=attn)
        decoder = None
        try:
            decoder = StaticDecoder(model, batch, max_len, capture="graph" if device.type == "cuda" else "none",
                                    attn=attn)
            with torch.inference_mode():  # the cache was made under inference mode
                for buf in decoder.cache.keys + decoder.cache.values:
                    buf.normal_()  # T cached positions of random keys and values
                sec = step_seconds(decoder, context, args.steps, args.repeats, device)
        except Exception as err:  # noqa: BLE001: out of memory or any failure: recorded, the run goes on
            say(f"  {name} B={batch} T={context} {attn}: FAILED {type(err).__name__}: {str(err)[:300]}")
            add("failed", "minids", preset, None, "", **fields, error=f"{type(err).__name__}: {err}"[:400])
            return
        finally:
            del decoder
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            write_records(path, records)
        fields.update(floor_ms=round(floor * 1e3, 3), path="graph+fused" if device.type == "cuda" else "static")
        add_decode("minids", preset, batch, sec, floor, fields)
        say(f"  {name} B={batch:>3} T={context} {attn:>6}: {sec * 1e3:7.2f} ms/step, {batch / sec:9.1f} tok/s, "
            f"floor {floor * 1e3:6.2f} ms -> {floor / sec:.1%}")
        write_records(path, records)

    variants = [(args.preset, k) for k in args.kv_heads] + ([] if args.no_big else [(args.big_preset, None)])
    for preset, kv_heads in variants:
        if left() < 20:
            say(f"SKIP {preset}: deadline"); break
        cfg = ModelConfig.preset(preset)
        cfg = cfg if kv_heads is None else cfg.replace(n_kv_heads=kv_heads)
        name = f"{preset} ({cfg.attention_kind}, {cfg.n_kv_heads} KV heads)"
        torch.manual_seed(0)
        model = DeepSeekLM(cfg, device="meta", dtype=dtype).materialize(device).eval()
        weight_bytes = sum(t.numel() * t.element_size() for t in model.parameters())
        say(f"{name}: {weight_bytes / 1e9:.1f} GB of weights")
        for context in args.contexts:
            for batch in args.batches:
                if left() < 15:
                    break
                max_len = context  # the step writes slot context - 1 and reads all context slots
                kv_bytes = kv_cache_bytes(cfg, context, batch, dtype=dtype)  # what a step must read
                need = kv_cache_bytes(cfg, max_len, batch, dtype=dtype) + int(args.reserve_gb * 1e9)
                fields = dict(batch=batch, context=context, kv_heads=cfg.n_kv_heads, weight_bytes=weight_bytes,
                              kv_bytes=kv_bytes, dtype=args.dtype, attention=cfg.attention_kind)
                if need > free_bytes(device):
                    say(f"  {name} B={batch} T={context}: cache {kv_bytes / 1e9:.1f} GB does not fit")
                    add("does_not_fit", "minids", preset, kv_bytes, "bytes", **fields)
                    write_records(path, records)
                    continue
                floor = (weight_bytes + kv_bytes) / args.bandwidth
                for attn in args.attn:
                    measure(model, preset, name, batch, context, max_len, floor, attn, fields)
        if preset == args.preset and kv_heads == args.kv_heads[0] and not args.no_hf:  # transformers, 7B as published
            from hf_twin import hf_twin

            hf = hf_twin(model).eval()
            context = args.contexts[0]
            for batch in [b for b in args.batches if b <= args.hf_max_batch]:
                kv_bytes = kv_cache_bytes(cfg, context + args.steps + 2, batch, dtype=dtype)
                if left() < 30 or kv_bytes * 1.5 + args.reserve_gb * 1e9 > free_bytes(device):
                    break
                try:
                    sec = hf_step_seconds(hf, batch, context, min(args.steps, 16), cfg.vocab_size, device)
                except torch.cuda.OutOfMemoryError:
                    say(f"  transformers B={batch}: out of memory"); gc.collect(); torch.cuda.empty_cache(); break
                floor = (weight_bytes + kv_cache_bytes(cfg, context, batch, dtype=dtype)) / args.bandwidth
                fields = dict(batch=batch, context=context, kv_heads=cfg.n_kv_heads, weight_bytes=weight_bytes,
                              kv_bytes=kv_cache_bytes(cfg, context, batch, dtype=dtype), dtype=args.dtype,
                              attention=cfg.attention_kind, floor_ms=round(floor * 1e3, 3), path="generate")
                add_decode("transformers", preset, batch, sec, floor, fields)
                say(f"  transformers {name} B={batch:>3} T={context}: {sec * 1e3:7.2f} ms/step, {batch / sec:9.1f} tok/s "
                    f"-> {floor / sec:.1%} of the floor")
                write_records(path, records)
            del hf
        del model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    # The 67B as MHA: computed, beside the measured GQA (its 64 KV heads' cache next to ~135 GB of weights).
    from minids import count_params

    big = ModelConfig.preset(args.big_preset)
    total = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else 141e9
    weights = count_params(big).total * 2  # bf16
    for kv in (big.n_kv_heads, big.n_heads):
        per_seq = kv_cache_bytes(big.replace(n_kv_heads=kv), 4096, 1, dtype=torch.bfloat16)
        fits = int(max(total - weights - args.reserve_gb * 1e9, 0) // per_seq)
        add("sequences_of_4k_beside_weights", "computed", args.big_preset, fits, "sequences", kv_heads=kv,
            kv_bytes_per_4k_sequence=per_seq, gpu_bytes=total, weight_bytes=weights, reserve_gb=args.reserve_gb)
        say(f"{args.big_preset} with {kv} KV heads: {fits} sequences of 4K tokens fit beside its weights")
    write_records(path, records)
    say(f"done: {len(records)} records -> {path}")


if __name__ == "__main__":
    main()
