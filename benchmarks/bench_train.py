"""Training step of a DeepSeek-shaped 1.6B model: minids (eager and compiled) against transformers.

    python benchmarks/bench_train.py --device cuda --peak-flops 790e12 --out benchmarks/results
    python benchmarks/bench_train.py --small --device cpu --compile-backend aot_eager --out /tmp/check

The model: 24 layers, d_model 2048, d_ff 5504, 16 heads (MHA, head_dim 128), vocab 102400 (1.63B parameters),
batch 8 x 2048 tokens, AdamW (betas 0.9/0.95, weight decay 0.1, fused=True on CUDA), no gradient clipping.
Precision, the same on both sides: float32 master weights, gradients and AdamW state; matrix products in
bf16 under torch.autocast (the regime of the transformers baseline in docs/references.md#h200). One step =
forward, float32 cross-entropy, backward, optimizer step, zero_grad. transformers runs eagerly with the same loss function and
the same fused AdamW; minids runs eagerly (the readable model) and compiled (minids.fast: regional
compilation of the layers and a compiled loss). Writes train.json: "train_tok_s", "train_mfu" (x3 forward
FLOPs, causal attention), "train_step_ms", "train_peak_mem_gb".
"""

from __future__ import annotations

import time

import torch

from bench_util import Bench, common_args, free_memory, sync
from hf_twin import hf_twin
from minids import DeepSeekLM, ModelConfig, count_params
from minids.fast import compile_model, compiled_loss, fused_adamw, make_train_step, next_token_loss
from minids.mfu import mfu

MODEL_NAME = "deepseek-1.6b-shape"


def train_config() -> ModelConfig:
    return ModelConfig.preset("deepseek-llm-7b").replace(n_layers=24, d_model=2048, d_ff=5504, n_heads=16,
                                                         n_kv_heads=16, max_seq_len=4096)


def small_config() -> ModelConfig:
    return train_config().replace(n_layers=2, d_model=128, d_ff=344, n_heads=2, n_kv_heads=2, vocab_size=1024)


def main():
    p = common_args(__doc__.splitlines()[0], budget_s=110)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=2048)
    args = p.parse_args()
    bench = Bench("train", args)
    device = bench.device
    cfg = small_config() if args.small else train_config()
    name = "small-check" if args.small else MODEL_NAME
    batch, seq = (2, 64) if args.small else (args.batch, args.seq_len)
    autocast = torch.bfloat16  # on the CPU check too: the same code path
    peak = bench.ceilings(torch.bfloat16 if device.type == "cuda" else torch.float32)
    bench.log(f"{name}: {count_params(cfg).total / 1e9:.3f}B parameters, B={batch} T={seq}")

    torch.manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq + 1), device=device)
    ids, targets = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()
    shape = dict(batch=batch, seq_len=seq, precision="fp32 master weights + bf16 autocast",
                 optimizer="AdamW fused" if device.type == "cuda" else "AdamW", peak_flops=peak)

    def run(impl, variant, build):
        def go():
            model, step = build()
            start = time.perf_counter()
            first = step(ids, targets).item()  # includes compilation for the compiled variant
            sync(device)
            first_s = time.perf_counter() - start
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            seconds = bench.time(lambda: step(ids, targets))
            extra = dict(variant=variant, first_step_s=round(first_s, 1), first_loss=round(first, 4), **shape)
            tok_s = batch * seq / seconds
            bench.add("train_tok_s", impl, name, tok_s, "tokens/s", **extra)
            bench.add("train_mfu", impl, name, mfu(tok_s, cfg, seq, peak, training=True), "fraction of peak", **extra)
            bench.add("train_step_ms", impl, name, seconds * 1e3, "ms", **extra)
            if device.type == "cuda":
                bench.add("train_peak_mem_gb", impl, name, torch.cuda.max_memory_allocated() / 1e9, "GB", **extra)
            del model, step
        bench.measure(f"{impl} {variant} training step", go,
                      dict(metric="train_mfu", impl=impl, model=name, unit="fraction of peak", variant=variant, **shape))
        free_memory()

    def build_minids():  # seeded, so every variant starts from the same float32 master weights
        torch.manual_seed(0)
        return DeepSeekLM(cfg, device="meta").materialize(device).train()

    # Both start from the same weights: transformers gets a copy of minids' initial tensors.
    def transformers_eager():
        model = build_minids()
        twin = hf_twin(model, copy=True).train()
        del model
        free_memory()
        return twin, make_train_step(twin, fused_adamw(twin.parameters()), loss_fn=next_token_loss,
                                     autocast_dtype=autocast)

    def minids_eager():
        model = build_minids()
        return model, make_train_step(model, fused_adamw(model.parameters()), loss_fn=next_token_loss,
                                      autocast_dtype=autocast)

    def minids_compiled():
        model = compile_model(build_minids(), backend=args.compile_backend)
        return model, make_train_step(model, fused_adamw(model.parameters()),
                                      loss_fn=compiled_loss(backend=args.compile_backend), autocast_dtype=autocast)

    run("transformers", "eager", transformers_eager)
    run("minids", "compiled", minids_compiled)
    run("minids", "eager", minids_eager)
    bench.log(f"done; {len(bench.records)} records in {bench.path}")


if __name__ == "__main__":
    main()
