"""What a sliding window costs and saves: one 67B-shaped attention layer, windowed against full causal.

    python benchmarks/bench_window.py --device cuda --out benchmarks/results          # one H200, ~2-3 minutes
    python benchmarks/bench_window.py --small --device cpu --out /tmp/check            # seconds: the script path
                                                       (on a CPU, FlexAttention has no backward: "flex" trains via SDPA)

One attention layer of the 67B (d_model 8192, 64 query heads sharing 8 KV heads, head_dim 128: q/k/v/o
projections, RoPE and attention, minids.attention.GroupedQueryAttention) in bf16, batch 1, at T = 4K .. 64K
tokens, forward (inference mode) and forward + backward. Variants, to separate the kernel from the window:

    window_flex        W = 4096 through FlexAttention's block mask (impl "flex"): tiles outside the band skipped
    full_flex          full causal through the same FlexAttention kernel (causal block mask)
    full_sdpa          full causal through SDPA (is_causal: the flash kernel), what the model runs by default
    window_sdpa_mask   W = 4096 through SDPA with a dense (t, t) boolean mask, up to 16K (the mask leaves flash)

Records: median milliseconds over --repeats after --warmup (benchmarks/records.py format, metric
"attention_forward_ms" / "attention_forward_backward_ms", variant, window, seq_len, batch) and the peak memory
allocated while timing ("peak_mem_gib"; weights and input included, the block mask's one-off construction
excluded). Then the KV cache per sequence of the 7B and 67B with and without W = 4096 up to 128K tokens
(minids.accounting.kv_cache_bytes, computed: metric "kv_cache_gib"). Everything measured is written as soon as
it is measured; a measurement that fails (out of memory) is recorded with its error, and once --deadline-s
has passed the remaining ones are recorded as skipped. Writes window_gpu.json (window_cpu.json on a CPU).
"""

from __future__ import annotations

import torch

from bench_util import Bench, common_args, sync
from minids import ModelConfig, kv_cache_bytes
from minids.attention import FLEX_AVAILABLE, GroupedQueryAttention, flex_usable
from minids.rope import RotaryEmbedding

WINDOW = 4096  # Mistral 7B's, the size docs/references.md#sliding-windows prices the 67B's cache at
SMALL_WINDOW = 32  # --small: the band must be narrower than the sequence for the comparison to mean anything
LAYER = "67b-attention-layer"


def variants(window: int) -> dict[str, tuple[str, int | None]]:
    """name: (attention impl, window)."""
    return {"window_flex": ("flex", window), "full_sdpa": ("sdpa", None), "full_flex": ("flex", None),
            "window_sdpa_mask": ("sdpa", window)}

DENSE_MASK_MAX_T = 16384  # a dense boolean mask is t^2 bytes: 4 GiB at 64K, and the kernel reads all of it


def layer_config(small: bool, window: int | None, seq_len: int) -> ModelConfig:
    """The 67B's attention shape (or a small one), one layer; vocabulary and FFN are irrelevant here."""
    if small:
        return ModelConfig(vocab_size=8, d_model=64, n_layers=1, n_heads=4, n_kv_heads=2, d_ff=8,
                           max_seq_len=seq_len, sliding_window=window)
    cfg = ModelConfig.preset("deepseek-llm-67b")
    return cfg.replace(n_layers=1, max_seq_len=seq_len, sliding_window=window)


def kv_cache_records(bench: Bench) -> None:
    for preset in ("deepseek-llm-7b", "deepseek-llm-67b"):
        cfg = ModelConfig.preset(preset)
        for seq_len in (4096, 8192, 16384, 32768, 65536, 131072):
            for window in (None, WINDOW):
                gib = kv_cache_bytes(cfg, seq_len, window=window) / 2**30
                bench.add("kv_cache_gib", "accounting", preset, gib, "GiB", batch=1, seq_len=seq_len, window=window,
                          variant="window" if window else "full", dtype="bfloat16", computed=True)


def measure(bench: Bench, variant: str, seq_len: int, backward: bool, small: bool) -> None:
    impl, window = variants(SMALL_WINDOW if small else WINDOW)[variant]
    device, dtype = bench.device, (torch.bfloat16 if bench.device.type == "cuda" else torch.float32)
    cfg = layer_config(small, window, seq_len)
    torch.manual_seed(0)
    layer = GroupedQueryAttention(cfg, 0, impl=impl, device=device, dtype=dtype)
    cos, sin = RotaryEmbedding(cfg.head_dim, cfg.rope_theta, seq_len)(torch.arange(seq_len, device=device))
    x = torch.randn(1, seq_len, cfg.d_model, device=device, dtype=dtype, requires_grad=backward)
    # What really runs: "flex" falls back to SDPA without FlexAttention, and on a CPU when training.
    with torch.set_grad_enabled(backward):
        kernel = "flex" if impl == "flex" and flex_usable(layer.q_proj(x[:, :1])) else "sdpa"
    grad = torch.randn_like(x) if backward else None

    def step():
        if not backward:
            with torch.inference_mode():
                return layer(x, cos, sin)
        x.grad = None
        layer.zero_grad(set_to_none=True)
        layer(x, cos, sin).backward(grad)

    step()  # compiles FlexAttention for this shape and builds the block mask once (cached), outside the peak
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = bench.time(step)
    extra = dict(variant=variant, kernel=kernel, window=window, batch=1, seq_len=seq_len, dtype=str(dtype),
                 n_heads=cfg.n_heads, n_kv_heads=cfg.n_kv_heads, head_dim=cfg.head_dim,
                 repeats=bench.args.repeats, flex_available=FLEX_AVAILABLE)
    if device.type == "cuda":
        extra["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    metric = "attention_forward_backward_ms" if backward else "attention_forward_ms"
    bench.add(metric, "minids", LAYER, seconds * 1e3, "ms", **extra)


def main(argv=None) -> None:
    p = common_args(__doc__.splitlines()[0], budget_s=150)
    p.add_argument("--deadline-s", type=float, dest="budget_s",
                   help="same as --budget-s: start no measurement after this many seconds")
    p.add_argument("--seq-lens", help="comma-separated T (default 4096,...,65536; with --small 64,128)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    bench = Bench(f"window_{'gpu' if device.type == 'cuda' else 'cpu'}" + ("_small" if args.small else ""), args)
    default = "64,128" if args.small else "4096,8192,16384,32768,65536"
    seq_lens = [int(t) for t in (args.seq_lens or default).split(",")]
    window = SMALL_WINDOW if args.small else WINDOW
    bench.log(f"{'small' if args.small else '67B'} attention layer on {device}, W = {window}, T = {seq_lens}, "
              f"FlexAttention available: {FLEX_AVAILABLE}, deadline {args.budget_s:.0f} s")
    kv_cache_records(bench)
    # Most important first: every T forward, then every T forward + backward, then the dense mask.
    plan = [(v, t, False) for t in seq_lens for v in ("window_flex", "full_sdpa", "full_flex")]
    plan += [(v, t, True) for t in seq_lens for v in ("window_flex", "full_sdpa", "full_flex")]
    plan += [("window_sdpa_mask", t, b) for b in (False, True) for t in seq_lens if t <= DENSE_MASK_MAX_T]
    for variant, t, backward in plan:
        mode = "forward+backward" if backward else "forward"
        metric = "attention_forward_backward_ms" if backward else "attention_forward_ms"
        bench.measure(f"{variant} T={t} {mode}", lambda: measure(bench, variant, t, backward, args.small),
                      failure=dict(metric=metric, impl="minids", model=LAYER, unit="ms", variant=variant,
                                   window=variants(window)[variant][1], batch=1, seq_len=t))
    bench.log(f"done: {len(bench.records)} records in {bench.path}")


if __name__ == "__main__":
    main()
