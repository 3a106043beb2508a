"""Prefill of the 7B preset: minids (readable eager, and compiled) against transformers, same weights.

    python benchmarks/bench_prefill.py --device cuda --peak-flops 790e12 --out benchmarks/results
    python benchmarks/bench_prefill.py --small --device cpu --compile-backend aot_eager --out /tmp/check

Writes prefill.json: per shape (B x T) and variant, "prefill_tok_s", "prefill_mfu" (causal attention FLOPs,
minids.mfu) and "prefill_ms"; the ceilings measured on this device; the logits' agreement with transformers.
Variants: transformers eager with PyTorch's default SDPA kernel (what a user gets) and with the cuDNN kernel;
minids eager (the readable model) with both kernels; minids compiled (minids.fast.compile_model) with the
SDPA kernel that a quick attention-only timing finds faster at that shape. All in bf16, inference mode.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from bench_util import Bench, common_args, sync
from hf_twin import hf_twin
from minids import DeepSeekLM, ModelConfig
from minids.fast import compile_model, sdpa_backend, uncompile_model
from minids.mfu import mfu


def small_config() -> ModelConfig:
    return ModelConfig.preset("deepseek-llm-7b").replace(n_layers=2, d_model=256, n_heads=2, n_kv_heads=2,
                                                         d_ff=688, vocab_size=1024, max_seq_len=256)


def parse_shapes(text: str) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in s.split("x")) for s in text.split(",")]


def fastest_sdpa(cfg, batch, seq, device, dtype, bench) -> str:
    """Time causal attention alone (one layer's q, k, v) with each fused kernel; the fastest one's name."""
    q = torch.randn(batch, cfg.n_heads, seq, cfg.head_dim, device=device, dtype=dtype)
    best, best_t = "default", float("inf")
    for name in ("default", "flash", "cudnn"):
        def run():
            with sdpa_backend(name):
                return F.scaled_dot_product_attention(q, q, q, is_causal=True)
        try:
            t = bench.time(run, warmup=2, repeats=5)
        except Exception as exc:  # noqa: BLE001  a kernel that cannot run here is simply not a candidate
            bench.log(f"  sdpa {name}: cannot run ({type(exc).__name__})")
            continue
        bench.log(f"  sdpa {name}: {t * 1e3:.2f} ms")
        if t < best_t * 0.97:  # a clear win only; otherwise keep PyTorch's choice
            best, best_t = name, t
    return best


def prefill_variants(bench, model, twin, cfg, name, batch, seq, peak, dtype, stage, chosen):
    """stage "main": transformers as shipped and minids compiled; "extra": minids eager, other kernels."""
    device = bench.device
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), device=device)
    shape = dict(batch=batch, seq_len=seq, dtype=str(dtype).replace("torch.", ""), peak_flops=peak)

    def timed(impl, variant, backend, forward, extra=None):
        def run():
            with torch.inference_mode(), sdpa_backend(backend):
                seconds = bench.time(forward)
            tok_s = batch * seq / seconds
            common = dict(variant=variant, sdpa_backend=backend, **shape, **(extra or {}))
            bench.add("prefill_tok_s", impl, name, tok_s, "tokens/s", **common)
            bench.add("prefill_mfu", impl, name, mfu(tok_s, cfg, seq, peak), "fraction of peak", **common)
            bench.add("prefill_ms", impl, name, seconds * 1e3, "ms", **common)
        failure = dict(metric="prefill_mfu", impl=impl, model=name, unit="fraction of peak", variant=variant,
                       sdpa_backend=backend, **shape)
        bench.measure(f"{impl} {variant} sdpa={backend} B={batch} T={seq}", run, failure)

    if stage == "main":
        backend = bench.measure("choose the SDPA kernel", lambda: fastest_sdpa(cfg, batch, seq, device, dtype, bench))
        chosen[(batch, seq)] = backend = backend or "default"
        timed("transformers", "eager", "default", lambda: twin(ids).logits)
    else:
        backend = chosen.get((batch, seq), "default")
        uncompile_model(model)
        timed("minids", "eager", "default", lambda: model(ids))
        for impl, fwd in (("minids", lambda: model(ids)), ("transformers", lambda: twin(ids).logits)):
            if backend != "default":
                timed(impl, "eager", backend, fwd)
        return

    def compiled(kernel):  # compile (first call, timed apart), check against the eager logits, then time
        uncompile_model(model)  # the reference must come from the readable model
        with torch.inference_mode(), sdpa_backend(kernel):
            ref = model(ids)[:, -16:].float()  # the readable model's last logits, to check the compiled ones
            compile_model(model, backend=bench.args.compile_backend)
            start = time.perf_counter()
            out = model(ids)[:, -16:].float()  # the first call compiles (one shape, static)
            sync(device)
            compile_s = time.perf_counter() - start
            err = ((out - ref).norm() / ref.norm()).item()
            del ref, out
        bench.log(f"  compiled in {compile_s:.1f}s, logits rel. error vs eager {err:.2e}")
        if err > 2e-2:
            raise RuntimeError(f"compiled logits differ from eager ones (rel. error {err:.2e})")
        return dict(compile_s=round(compile_s, 1), rel_err_vs_eager=err)

    for kernel in dict.fromkeys([backend, "default"]):  # if the chosen kernel fails to compile, PyTorch's choice
        info = bench.measure(f"compile minids B={batch} T={seq} sdpa={kernel}", lambda: compiled(kernel),
                             dict(metric="prefill_compile", impl="minids", model=name, unit="s",
                                  variant="compiled", sdpa_backend=kernel, **shape))
        if info:
            timed("minids", "compiled", kernel, lambda: model(ids), info)
            break
        torch._dynamo.reset()  # drop whatever the failed attempt left behind


def main():
    p = common_args(__doc__.splitlines()[0], budget_s=100)
    p.add_argument("--model", default="deepseek-llm-7b")
    p.add_argument("--shapes", default="1x4096,8x2048", help="comma-separated BxT")
    args = p.parse_args()
    bench = Bench("prefill", args)
    device = bench.device
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cfg = small_config() if args.small else ModelConfig.preset(args.model)
    name = "small-check" if args.small else args.model
    shapes = [(1, 128), (2, 64)] if args.small else parse_shapes(args.shapes)
    torch.manual_seed(0)
    peak = bench.ceilings(dtype)

    bench.log(f"building {name} in {dtype} on {device}")
    model = DeepSeekLM(cfg, device="meta", dtype=dtype).materialize(device).eval().requires_grad_(False)
    twin = hf_twin(model)  # same tensors, no second copy

    def parity():
        ids = torch.randint(0, cfg.vocab_size, (1, 256 if not args.small else 32), device=device)
        with torch.inference_mode():
            a, b = model(ids).float(), twin(ids).logits.float()
        err = ((a - b).norm() / b.norm()).item()
        bench.add("logits_rel_err_vs_transformers", "minids", name, err, "relative L2", dtype=str(dtype))

    bench.measure("logits agree with transformers", parity)
    run_shapes(bench, model, twin, cfg, name, shapes, peak, dtype)
    bench.log(f"done; {len(bench.records)} records in {bench.path}")


def run_shapes(bench, model, twin, cfg, name, shapes, peak, dtype):
    """The headline pair at every shape first, then the extras, so a short time budget loses only extras."""
    chosen = {}
    for stage in ("main", "extra"):
        for batch, seq in shapes:
            prefill_variants(bench, model, twin, cfg, name, batch, seq, peak, dtype, stage, chosen)


if __name__ == "__main__":
    main()
