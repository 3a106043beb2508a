"""Batched decode against its bandwidth floor: MHA vs GQA, per decode-attention kernel, beside transformers.

    python benchmarks/bench_batched_decode.py --device cuda --out benchmarks/results      # one H200, ~8 min
    python benchmarks/bench_batched_decode.py --device cpu --preset tiny --big-preset deepseek-llm-67b-mini \\
        --dtype fp32 --contexts 32 64 --batches 1 2 4 --steps 4 --no-hf --out /tmp/batched   # a CPU check

At batch 1 a decode step reads every weight once and the KV cache is small beside them. Serving B sequences
of context T, one step reads the weights once (shared by all rows) and every row's cache:

    bytes per step = weight bytes + B * kv_cache_bytes(config, T)          floor = bytes / bandwidth

so the cache, which GQA shrinks by n_heads / n_kv_heads, is what grows with B. Measured on random bf16
weights created on the device (the speed of a step does not depend on the numbers):

    minids          StaticDecoder(capture="graph", fuse=True, attn=KERNEL, compile_layers=...): the static
                    step recorded as a CUDA graph, over a cache holding T random positions (filled directly: a
                    prefill of B x T tokens would take longer than the measurement and changes nothing in the
                    step). KERNEL is the decode attention (minids/decode_attention.py): sdpa, einsum, flex
                    (FlexAttention's split-KV decoding template) or triton (minids' split-KV kernel);
                    compile_layers runs the code between two attentions through Inductor.
    transformers    LlamaForCausalLM.generate(do_sample=False) on the same weight tensors, B random prompts of
                    T tokens: (time for N + 1 new tokens - time for 1) / N. Path "static+compile": its static
                    cache, with which generate compiles the decoding forward (mode "reduce-overhead", its
                    documented fast path); path "generate": its default dynamic cache, eager.

Before any timing, each kernel is checked on this GPU against the grouped einsum computed in float32 on the
same bf16 inputs (ragged left-padded rows at the real cache shape): metric decode_kernel_rel_err. A kernel
that fails the check (relative error > 2e-2) is not timed. For "flex" the run also records whether Inductor
chose its decoding (split-KV) template (flex_decoding_template_used) and the kernel names a profile saw.

Records (each dated, each naming its kernel in decode_attention and its path): decode_tok_s,
decode_ms_per_step, decode_frac_of_bandwidth_floor, with fields batch, context, kv_heads, weight_bytes,
kv_bytes, floor_ms. A batch whose cache does not fit is recorded as skipped (metric "does_not_fit").
profile_us_per_step: where the batch-1 step's GPU time goes (part = attention, matmul, elementwise/other,
gaps), from torch.profiler over graph replays. --previous FILE keeps that file's records in front of the
new ones (the before/after history). File: <out>/batched_decode_gpu.json (replaced), log beside it.
Published batch-1 figures to set beside these (gpt-fast, a fused "megakernel"): docs/references.md#decode-anchors;
the split-KV kernels this times: docs/references.md#split-kv.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from records import record, write_records  # noqa: E402

from minids import DeepSeekLM, ModelConfig, kv_cache_bytes  # noqa: E402
from minids.decode_attention import DECODE_KERNELS, decode, reference_decode, runs_as, visible_keys  # noqa: E402
from minids.static_cache import StaticDecoder  # noqa: E402

START = time.perf_counter()
KERNEL_NAMES = {"sdpa": "SDPA (mask, no split)", "einsum": "grouped einsum (two batched products)",
                "flex": "FlexAttention decoding (split-KV)", "triton": "minids Triton split-KV"}
MAX_REL_ERR = 2e-2  # bf16 inputs and probabilities: errors of 1e-3 .. 1e-2 are rounding


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
    decoder.step(token, pos)  # warm-up
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        for _ in range(steps):  # the same position every step: same bytes read, nothing grows
            decoder.step(token, pos)
        sync(device)
        times.append((time.perf_counter() - t) / steps)
    return sorted(times)[len(times) // 2]


def kernel_rel_err(kernel: str, cfg: ModelConfig, context: int, dtype, device, batch: int = 3) -> float:
    """The kernel against the float32 grouped einsum on the same inputs: ragged left padding, real cache shape."""
    g = torch.Generator(device=device).manual_seed(1)
    q = torch.randn(batch, cfg.n_heads, 1, cfg.head_dim, device=device, generator=g).to(dtype)
    k, v = (torch.randn(batch, cfg.n_kv_heads, context, cfg.head_dim, device=device, generator=g).to(dtype)
            for _ in range(2))
    start = torch.tensor([0, context // 3, context - 5][:batch], device=device)  # left padding per row
    end = torch.full((batch,), context, device=device)
    want = reference_decode(q.float(), k.float(), v.float(), start, end)
    got = decode(q, k, v, visible_keys(kernel, start, end, context)).float()
    return ((got - want).norm() / want.norm()).item()


def flex_template_probe():
    """Counts Inductor's choices while compiling flex_attention: decoding template or the non-splitting one."""
    seen = {"decoding": 0, "not_decoding": 0}
    try:
        import torch._inductor.kernel.flex.flex_attention as lowering

        original = lowering._use_flex_decoding

        def spy(*args, **kwargs):
            used = original(*args, **kwargs)
            seen["decoding" if used else "not_decoding"] += 1
            return used

        lowering._use_flex_decoding = spy
    except (ImportError, AttributeError) as err:  # another torch layout: the profile's kernel names still tell
        seen["error"] = repr(err)
    return seen


def kernel_times(step, replays: int) -> dict[str, float]:
    """Microseconds per call of each GPU kernel that `step()` runs, from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        for _ in range(replays):
            step()
        torch.cuda.synchronize()
    kernels: dict[str, float] = {}
    for e in prof.events():
        if e.device_type.name == "CUDA" and e.device_time > 0 and "Memcpy" not in e.name and "Memset" not in e.name:
            kernels[e.name] = kernels.get(e.name, 0.0) + e.device_time / replays
    return kernels


def profile_step(decoder: StaticDecoder, context: int, device, attn: str, compiled: bool,
                 replays: int = 5) -> tuple[dict, list, str]:
    """GPU time per step by part (microseconds) and the top kernels: from torch.profiler over CUDA-graph
    replays, or, where the profiler sees no kernels inside replays, over the same step run eagerly."""
    from minids.static_cache import static_decode_step

    batch = decoder.cache.batch
    token = torch.zeros(batch, 1, dtype=torch.long, device=device)
    pos = torch.full((1,), context - 1, dtype=torch.long, device=device)
    decoder.step(token, pos)
    sync(device)
    t = time.perf_counter()
    for _ in range(replays):
        decoder.step(token, pos)
    sync(device)
    wall = (time.perf_counter() - t) / replays * 1e6  # microseconds per replayed step
    kernels, source = kernel_times(lambda: decoder.step(token, pos), replays), "graph replays"
    if not kernels:
        kernels, source = kernel_times(lambda: static_decode_step(
            decoder.model, decoder.cache, token, pos, decoder.fuse, None, attn, compiled), replays), "eager step"
    parts = {"attention": 0.0, "matmul": 0.0, "elementwise/other": 0.0}
    for name, us in kernels.items():
        low = name.lower()
        if any(s in low for s in ("partial_attention", "merge_splits", "flex", "fmha", "attention", "flash",
                                  "softmax", "tem_fused")):
            parts["attention"] += us
        elif any(s in low for s in ("gemv", "gemm", "cutlass", "nvjet", "sm90", "xmma", "splitk", "mm_")):
            parts["matmul"] += us
        else:
            parts["elementwise/other"] += us
    parts["gaps (step time - kernel time)"] = max(wall - sum(parts.values()), 0.0)
    top = sorted(kernels.items(), key=lambda kv: -kv[1])[:12]
    return {k: round(v, 1) for k, v in parts.items()}, [(n[:120], round(us, 1)) for n, us in top], source


def hf_step_seconds(hf, batch: int, context: int, steps: int, vocab: int, device, static: bool) -> float:
    prompt = torch.randint(0, vocab, (batch, context), device=device)
    extra = dict(cache_implementation="static") if static else {}

    def run(k):
        with torch.inference_mode():
            hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=k, min_new_tokens=k,
                        do_sample=False, **extra)
        sync(device)

    run(steps + 1)  # warm-up: with the static cache, generate compiles its decoding forward for this shape
    t = time.perf_counter(); run(1); one = time.perf_counter() - t  # prefill and the first token only
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
    p.add_argument("--attn", nargs="+", default=["triton"], choices=DECODE_KERNELS,
                   help="the static step's decode attention kernels to time")
    p.add_argument("--compile-layers", type=int, nargs="+", default=[1], choices=[0, 1],
                   help="1: the code between two attentions through Inductor; 0: eager kernels")
    p.add_argument("--baseline", default="sdpa", choices=DECODE_KERNELS,
                   help="the previous path (this kernel, eager layers) re-timed in the same run at --baseline-batches")
    p.add_argument("--baseline-batches", type=int, nargs="*", default=[1, 8, 64])
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-hf", action="store_true")
    p.add_argument("--hf-batches", type=int, nargs="+", default=[1, 16],
                   help="transformers' static cache + compile at these batches (7B as published, first context)")
    p.add_argument("--hf-eager-batches", type=int, nargs="*", default=[],
                   help="transformers' default (dynamic cache, eager) generate at these batches")
    p.add_argument("--profile-batch", type=int, default=1, help="profile the step at this batch (0: none)")
    p.add_argument("--bandwidth", type=float, default=None,
                   help="bytes/s for the floor; default: the device-to-device copy measured on this kind of card "
                        "(H200 4.3e12, H100 3.0e12)")
    p.add_argument("--reserve-gb", type=float, default=3.0, help="memory left free for activations")
    p.add_argument("--deadline-s", type=float, default=480)
    p.add_argument("--previous", default=None, help="a results file whose records are kept in front of the new")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    path = os.path.join(args.out, "batched_decode_gpu.json")
    logf = open(os.path.join(args.out, "batched_decode_gpu.log"), "w")
    previous = json.load(open(args.previous)) if args.previous else []
    records: list[dict] = []
    say = lambda m: log(m, logf)  # noqa: E731
    say(f"torch {torch.__version__}, {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}")
    flex_seen = flex_template_probe() if "flex" in args.attn else None
    if args.bandwidth is None:
        card = torch.cuda.get_device_name() if device.type == "cuda" else ""
        args.bandwidth = 3.0e12 if "H100" in card else 4.3e12
    say(f"floor bandwidth {args.bandwidth / 1e12:.1f} TB/s")

    def save() -> None:
        write_records(path, previous + records)

    def add(metric, impl, model, value, unit, **extra):
        records.append(record(metric, impl, model, value, unit, device, **extra))

    def add_decode(impl, model, batch, sec, floor, fields):
        """The three records of one measured step: tokens/s, ms per step, and the fraction of the floor."""
        add("decode_tok_s", impl, model, round(batch / sec, 1), "tokens/s", **fields)
        add("decode_ms_per_step", impl, model, round(sec * 1e3, 3), "ms", **fields)
        add("decode_frac_of_bandwidth_floor", impl, model, round(floor / sec, 4), "fraction", **fields)

    def left() -> float:
        return args.deadline_s - (time.perf_counter() - START)

    def measure(model, preset, name, batch, context, floor, attn, compiled, fields) -> None:
        """One (model, context, batch, kernel) point: a recorded CUDA graph over a random cache."""
        ran = runs_as(attn, device)
        fields = dict(fields, decode_attention=ran, decode_kernel=KERNEL_NAMES[ran], compile_layers=bool(compiled),
                      path=("graph+fused" if device.type == "cuda" else "static") + ("+compiled" if compiled else ""))
        decoder = None
        try:
            decoder = StaticDecoder(model, batch, context, capture="graph" if device.type == "cuda" else "none",
                                    attn=attn, compile_layers=bool(compiled))
            with torch.inference_mode():  # the cache was made under inference mode
                for buf in decoder.cache.keys + decoder.cache.values:
                    buf.normal_()  # T cached positions of random keys and values
                sec = step_seconds(decoder, context, args.steps, args.repeats, device)
                if batch == args.profile_batch and context == args.contexts[0] and device.type == "cuda":
                    parts, top, source = profile_step(decoder, context, device, attn, bool(compiled))
                    for part, us in parts.items():
                        add("profile_us_per_step", "minids", preset, us, "us", **fields, part=part, source=source)
                    add("profile_top_kernels", "minids", preset, None, "", **fields, kernels=top, source=source)
                    say(f"  profile ({source}) {name} B={batch} {ran}{'+compiled' if compiled else ''}: {parts}")
                    for kname, us in top[:8]:
                        say(f"      {us:8.1f} us  {kname[:90]}")
        except Exception as err:  # noqa: BLE001: out of memory or any failure: recorded, the run goes on
            say(f"  {name} B={batch} T={context} {ran}: FAILED {type(err).__name__}: {str(err)[:300]}")
            add("failed", "minids", preset, None, "", **fields, error=f"{type(err).__name__}: {err}"[:400])
            return
        finally:
            del decoder
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            save()
        fields.update(floor_ms=round(floor * 1e3, 3))
        add_decode("minids", preset, batch, sec, floor, fields)
        say(f"  {name} B={batch:>3} T={context} {ran:>6}{'+c' if compiled else '  '}: {sec * 1e3:7.2f} ms/step, "
            f"{batch / sec:9.1f} tok/s, floor {floor * 1e3:6.2f} ms -> {floor / sec:.1%}")
        save()

    # The big model first (its few batches would be the first lost to the deadline otherwise), then --preset's
    # variants in the order given; transformers runs after the variant with as many KV heads as query heads.
    variants = ([] if args.no_big else [(args.big_preset, None)]) + [(args.preset, k) for k in args.kv_heads]
    for preset, kv_heads in variants:
        if left() < 20:
            say(f"SKIP {preset}: deadline"); break
        cfg = ModelConfig.preset(preset)
        cfg = cfg if kv_heads is None else cfg.replace(n_kv_heads=kv_heads)
        name = f"{preset} ({cfg.attention_kind}, {cfg.n_kv_heads} KV heads)"
        from minids import count_params

        if count_params(cfg).total * (2 if dtype == torch.bfloat16 else 4) + 2e9 > free_bytes(device):
            say(f"SKIP {name}: its weights do not fit on this card")
            add("does_not_fit", "minids", preset, None, "bytes", kv_heads=cfg.n_kv_heads, what="weights")
            continue
        torch.manual_seed(0)
        model = DeepSeekLM(cfg, device="meta", dtype=dtype).materialize(device).eval()
        weight_bytes = sum(t.numel() * t.element_size() for t in model.parameters())
        say(f"{name}: {weight_bytes / 1e9:.1f} GB of weights")
        good = []
        for attn in args.attn:  # each kernel against the float32 einsum on this GPU, before any timing
            errs = [kernel_rel_err(attn, cfg, c, dtype, device) for c in args.contexts]
            for c, e in zip(args.contexts, errs):
                add("decode_kernel_rel_err", "minids", preset, round(e, 6), "relative", kv_heads=cfg.n_kv_heads,
                    context=c, decode_attention=runs_as(attn, device), batch=3, rows="left-padded 0, T/3, T-5")
            say(f"  check {runs_as(attn, device)} vs float32 einsum: rel err {max(errs):.2e}")
            if max(errs) <= MAX_REL_ERR:
                good.append(attn)
            else:
                say(f"  {attn} FAILED the check: not timed")
        if flex_seen is not None:
            say(f"  flex lowering choices so far: {flex_seen}")
        save()
        for context in args.contexts:
            for batch in args.batches:
                if left() < 15:
                    break
                kv_bytes = kv_cache_bytes(cfg, context, batch, dtype=dtype)  # what a step must read
                need = kv_bytes + int(args.reserve_gb * 1e9)
                fields = dict(batch=batch, context=context, kv_heads=cfg.n_kv_heads, weight_bytes=weight_bytes,
                              kv_bytes=kv_bytes, dtype=args.dtype, attention=cfg.attention_kind)
                if need > free_bytes(device):
                    say(f"  {name} B={batch} T={context}: cache {kv_bytes / 1e9:.1f} GB does not fit")
                    add("does_not_fit", "minids", preset, kv_bytes, "bytes", **fields)
                    save()
                    continue
                floor = (weight_bytes + kv_bytes) / args.bandwidth
                paths = [(attn, compiled) for attn in good for compiled in args.compile_layers]
                if batch in args.baseline_batches and (args.baseline, 0) not in paths:
                    paths.append((args.baseline, 0))  # the earlier path on the same card, in the same run
                for attn, compiled in paths:
                    measure(model, preset, name, batch, context, floor, attn, compiled, fields)
        if flex_seen is not None:
            add("flex_decoding_template_used", "minids", preset, flex_seen.get("decoding", 0) > 0, "bool",
                kv_heads=cfg.n_kv_heads, lowering_choices=dict(flex_seen))
            save()
        if preset == args.preset and cfg.n_kv_heads == cfg.n_heads and not args.no_hf:  # transformers, 7B as published
            from hf_twin import hf_twin

            hf = hf_twin(model).eval()
            context = args.contexts[0]
            runs = [(b, True) for b in args.hf_batches] + [(b, False) for b in args.hf_eager_batches]
            for batch, static in runs:
                kv_bytes = kv_cache_bytes(cfg, context + args.steps + 2, batch, dtype=dtype)
                if left() < 60 or kv_bytes * 1.5 + args.reserve_gb * 1e9 > free_bytes(device):
                    say(f"  transformers B={batch}: skipped (deadline or memory)"); continue
                hf_path = "static+compile" if static else "generate"
                try:
                    sec = hf_step_seconds(hf, batch, context, min(args.steps, 16), cfg.vocab_size, device, static)
                except Exception as err:  # noqa: BLE001
                    say(f"  transformers B={batch} {hf_path}: FAILED {type(err).__name__}: {str(err)[:300]}")
                    add("failed", "transformers", preset, None, "", batch=batch, context=context, path=hf_path,
                        error=f"{type(err).__name__}: {err}"[:400])
                    gc.collect(); torch.cuda.empty_cache(); continue
                floor = (weight_bytes + kv_cache_bytes(cfg, context, batch, dtype=dtype)) / args.bandwidth
                fields = dict(batch=batch, context=context, kv_heads=cfg.n_kv_heads, weight_bytes=weight_bytes,
                              kv_bytes=kv_cache_bytes(cfg, context, batch, dtype=dtype), dtype=args.dtype,
                              attention=cfg.attention_kind, floor_ms=round(floor * 1e3, 3), path=hf_path,
                              decode_attention="sdpa", decode_kernel="transformers SDPA (repeat_kv)")
                add_decode("transformers", preset, batch, sec, floor, fields)
                say(f"  transformers {hf_path} {name} B={batch:>3} T={context}: {sec * 1e3:7.2f} ms/step, "
                    f"{batch / sec:9.1f} tok/s -> {floor / sec:.1%} of the floor")
                save()
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
    save()
    say(f"done: {len(records)} new records ({len(previous)} kept from {args.previous}) -> {path}")


if __name__ == "__main__":
    main()
