"""DeepSeekMoE's cost on one GPU: the MoE layer and a training step against the dense model of equal active
parameters, the routed-sum implementations against each other, and the deepseek-moe-16b preset against the 7B.

    python benchmarks/bench_moe.py --device cuda --out benchmarks/results --deadline-s 540     # one H200, ~3-5 min
    python benchmarks/bench_moe.py --small --device cpu --out /tmp/check                        # seconds on a CPU

1. The layer: deepseek-moe-16b's MoE FFN (d_model 2048; 2 shared + 64 routed experts of width 1408, 6 routed per
   token) against a dense SwiGLU of the same active width (2 + 6) x 1408 = 11264, on B x T tokens; forward in
   bf16 (inference) and forward + backward under bf16 autocast with float32 weights (training). Routed-sum
   implementations (minids.moe): "grouped" (torch's grouped GEMM, one kernel for all experts), "dispatch"
   (tokens sorted by expert, one product per expert) and "reference" (the per-token loop, on fewer tokens: it
   is far too slow for the full batch). First the paths are checked against each other on the same input.
2. A training step (AdamW, bf16 autocast, float32 master weights; LM loss + balance loss) of the 16B's shape cut
   to --train-layers layers (layer 0 dense, the rest MoE) against the same stack with dense FFNs of width 11264:
   equal active parameters (to within the router), tokens/s and their ratio (the goal: >= 0.5), peak memory.
3. The deepseek-moe-16b preset materialised in bf16 with random weights (32.8 GB) and the 7B preset (13.8 GB):
   prefill tokens/s at 1 x 4096 and batch-1 decode tokens/s with the KV cache (eager generate()), beside the
   paper's 74.4 vs 183.5 TFLOPs per 4K tokens and minids' own FLOP count (minids.accounting).

Records (benchmarks/results/moe.json; --small: small_moe.json) are rewritten atomically after every measurement;
each measurement is isolated (a failure or an out-of-memory is recorded and the rest goes on), and no new
measurement starts after --deadline-s seconds.
"""

from __future__ import annotations

import time

import torch

from bench_util import Bench, common_args, free_memory, sync
from minids import DeepSeekLM, ModelConfig, SwiGLU, count_params, matmul_flops_per_token
from minids.generate import generate
from minids.moe import DeepSeekMoE, grouped_gemm_runs
from minids.train import lm_loss

MOE_16B = "deepseek-moe-16b"


def layer_configs(small: bool) -> tuple[ModelConfig, int]:
    """(the MoE config whose layer is measured, the dense width of equal active parameters)."""
    cfg = ModelConfig.preset(MOE_16B)
    if small:
        cfg = cfg.replace(vocab_size=512, d_model=64, n_layers=3, n_heads=2, n_kv_heads=2, d_ff=256,
                          n_routed_experts=8, n_shared_experts=1, n_experts_per_token=2, moe_d_ff=32, max_seq_len=256)
    return cfg, (cfg.n_shared_experts + cfg.n_experts_per_token) * cfg.moe_d_ff


def main():
    p = common_args(__doc__.splitlines()[0], budget_s=540)
    p.add_argument("--deadline-s", dest="budget_s", type=float, help="same as --budget-s")
    p.add_argument("--layer-tokens", default="8x2048", help="BxT for the layer measurements")
    p.add_argument("--train-shape", default="4x2048", help="BxT for the training step")
    p.add_argument("--train-layers", type=int, default=6)
    p.add_argument("--decode-tokens", type=int, default=64)
    p.add_argument("--prefill", default="1x4096")
    args = p.parse_args()
    bench = Bench("small_moe" if args.small else "moe", args)
    dev = bench.device
    if args.small:
        args.layer_tokens, args.train_shape, args.prefill, args.decode_tokens = "2x64", "2x32", "1x64", 8
    cfg, dense_width = layer_configs(args.small)
    name = "small-check" if args.small else MOE_16B
    bench.log(f"{name}: layer {cfg.n_shared_experts} shared + {cfg.n_routed_experts} routed x {cfg.moe_d_ff}, "
              f"top-{cfg.n_experts_per_token}; dense of equal active width {dense_width}; "
              f"grouped GEMM runs here: {grouped_gemm_runs(dev, torch.bfloat16)}")
    layer_benchmarks(bench, cfg, dense_width, name, *shape(args.layer_tokens))
    train_benchmarks(bench, cfg.replace(n_layers=args.train_layers if not args.small else 3), dense_width, name,
                     *shape(args.train_shape))
    preset_benchmarks(bench, args)
    bench.log(f"done; {len(bench.records)} records in {bench.path}")


def shape(text: str) -> tuple[int, int]:
    b, t = (int(v) for v in text.split("x"))
    return b, t


# ---- 1. the layer ---------------------------------------------------------------------------------------------
def layer_benchmarks(bench, cfg, dense_width, name, batch, seq):
    dev = bench.device
    half = torch.bfloat16 if dev.type == "cuda" else torch.float32  # the CPU check runs float32 throughout
    torch.manual_seed(0)
    moe = DeepSeekMoE(cfg, device=dev)
    dense = SwiGLU(cfg.d_model, dense_width, device=dev)
    for m in (moe, dense):
        for prm in m.parameters():
            torch.nn.init.normal_(prm, std=cfg.init_std)
    expert_bytes = sum(prm.numel() for prm in moe.experts.parameters()) * 2
    bench.add("layer_routed_expert_mem_gb", "minids", name, expert_bytes / 1e9, "GB", dtype="bf16",
              note="one MoE layer's routed experts; x n_moe_layers for the model")
    bench.add("model_routed_expert_mem_gb", "minids", name, count_params(cfg).routed_experts * 2 / 1e9, "GB",
              dtype="bf16", n_moe_layers=cfg.n_moe_layers)
    x = torch.randn(batch, seq, cfg.d_model, device=dev)
    common = dict(batch=batch, seq_len=seq, n_routed=cfg.n_routed_experts, top_k=cfg.n_experts_per_token,
                  moe_d_ff=cfg.moe_d_ff, dense_width=dense_width)
    impls = ["dispatch"] + (["grouped"] if grouped_gemm_runs(dev, half) else [])

    def agree():  # the fast paths against the readable loop, on a few tokens, in float32 and in bf16
        few = x[:1, :32]
        with torch.no_grad():
            moe.impl = "reference"
            ref = moe(few).float()
            for impl in impls:
                moe.impl = impl
                with torch.autocast(dev.type, dtype=half, enabled=half != torch.float32):
                    got = moe(few).float()
                err = ((got - ref).norm() / ref.norm()).item()
                bench.add("layer_rel_err_vs_reference", impl, name, err, "relative L2", dtype=str(half), **common)
    bench.measure("fast paths agree with the reference loop", agree)

    def timed(label, module, impl, tokens, train):
        def run():
            if impl:
                module.impl = impl
            inp = x.reshape(-1, cfg.d_model)[:tokens].reshape(1, tokens, cfg.d_model)
            if train:
                def step():
                    with torch.autocast(dev.type, dtype=half, enabled=half != torch.float32):
                        y = module(inp)
                    y.float().square().mean().backward()
            else:
                weights = module.to(half)

                def step():
                    with torch.no_grad():
                        weights(inp.to(half))
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            seconds = bench.time(step, warmup=1 if impl == "reference" else None,
                                 repeats=2 if impl == "reference" else None)
            module.to(torch.float32)
            module.zero_grad(set_to_none=True)
            extra = dict(common, tokens=tokens, variant="train fwd+bwd (bf16 autocast)" if train else "forward bf16")
            rec = bench.add("layer_train_tok_s" if train else "layer_fwd_tok_s", impl or "dense", name,
                            tokens / seconds, "tokens/s", **extra)
            if dev.type == "cuda":
                bench.add("layer_peak_mem_gb", impl or "dense", name, torch.cuda.max_memory_allocated() / 1e9, "GB",
                          **extra)
            return rec["value"]
        return bench.measure(label, run, dict(metric="layer_train_tok_s" if train else "layer_fwd_tok_s",
                                              impl=impl or "dense", model=name, unit="tokens/s", **common))

    T = batch * seq
    for train in (False, True):
        what = "train" if train else "fwd"
        base = timed(f"dense SwiGLU {what}", dense, None, T, train)
        for impl in impls:
            got = timed(f"MoE {impl} {what}", moe, impl, T, train)
            if base and got:
                bench.add(f"layer_{what}_ratio_vs_dense", impl, name, got / base, "x dense tokens/s", **common)
        few = min(T, 256)
        got = timed(f"MoE reference loop {what} ({few} tokens)", moe, "reference", few, train)
        if base and got:
            bench.add(f"layer_{what}_ratio_vs_dense", "reference", name, got / base, "x dense tokens/s",
                      reference_tokens=few, **common)
    del moe, dense, x
    free_memory()


# ---- 2. a training step ---------------------------------------------------------------------------------------
def train_benchmarks(bench, cfg, dense_width, name, batch, seq):
    dev = bench.device
    dense_cfg = ModelConfig(**{k: v for k, v in cfg.to_dict().items() if k in (
        "vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "max_seq_len", "rope_theta", "norm_eps")},
        d_ff=dense_width)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq + 1), device=dev)
    inputs, targets = ids[:, :-1], ids[:, 1:]
    results = {}
    for label, c in (("dense", dense_cfg), ("moe", cfg)):
        p = count_params(c)
        extra = dict(variant=label, n_layers=c.n_layers, total_params=p.total, active_params=p.active,
                     batch=batch, seq_len=seq, precision="fp32 master + bf16 autocast")

        def run(c=c, label=label, extra=extra):
            torch.manual_seed(0)
            model = DeepSeekLM(c, device=dev)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
                                    fused=dev.type == "cuda" or None)

            def step():
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                    logits = model(inputs, validate=False)
                loss = lm_loss(logits, targets) + model.moe_aux_loss()
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            step()
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            seconds = bench.time(step)
            tok_s = batch * seq / seconds
            bench.add("train_tok_s", label, name, tok_s, "tokens/s", **extra)
            bench.add("train_step_ms", label, name, seconds * 1e3, "ms", **extra)
            if dev.type == "cuda":
                bench.add("train_peak_mem_gb", label, name, torch.cuda.max_memory_allocated() / 1e9, "GB", **extra)
            if c.is_moe:
                load = model.expert_load()
                bench.add("train_load_imbalance_max_over_mean", label, name,
                          (load.amax(-1) / load.mean(-1)).max().item(), "x", **extra)
            del model, opt
            return tok_s
        results[label] = bench.measure(f"training step {label} ({c.n_layers} layers)", run,
                                       dict(metric="train_tok_s", impl=label, model=name, unit="tokens/s", **extra))
        free_memory()
    if results.get("dense") and results.get("moe"):
        bench.add("train_tok_s_ratio_moe_vs_dense", "minids", name, results["moe"] / results["dense"],
                  "x dense tokens/s", goal=">= 0.5", n_layers=cfg.n_layers, batch=batch, seq_len=seq)


# ---- 3. the presets ---------------------------------------------------------------------------------------------
def preset_benchmarks(bench, args):
    dev = bench.device
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    pb, pt = shape(args.prefill)
    for preset in (MOE_16B, "deepseek-llm-7b"):
        cfg = ModelConfig.preset(preset)
        if args.small:
            cfg = cfg.replace(vocab_size=512, d_model=64, n_layers=3, n_heads=2, n_kv_heads=2, d_ff=256,
                              max_seq_len=256, **(dict(n_routed_experts=8, n_shared_experts=1, n_experts_per_token=2,
                                                       moe_d_ff=32) if cfg.is_moe else {}))
        p = count_params(cfg)
        flops_4k = matmul_flops_per_token(cfg, 4096, causal=False, training=True) * 4096 / 1e12
        info = dict(total_params=p.total, active_params=p.active, dtype=str(dtype).replace("torch.", ""),
                    train_tflops_per_4k_tokens=round(flops_4k, 1),
                    paper_tflops_per_4k_tokens={MOE_16B: 74.4, "deepseek-llm-7b": 183.5}[preset])

        def run(cfg=cfg, preset=preset, info=info):
            start = time.perf_counter()
            model = DeepSeekLM(cfg, device="meta", dtype=dtype).materialize(dev).eval().requires_grad_(False)
            sync(dev)
            weights = sum(t.numel() * t.element_size() for t in model.parameters())
            bench.add("weights_gb", "minids", preset, weights / 1e9, "GB", materialize_s=round(
                time.perf_counter() - start, 1), **info)
            ids = torch.randint(0, cfg.vocab_size, (pb, pt), device=dev)
            with torch.inference_mode():
                seconds = bench.time(lambda: model(ids, validate=False, last_only=True))
            bench.add("prefill_tok_s", "minids", preset, pb * pt / seconds, "tokens/s", batch=pb, seq_len=pt, **info)
            prompt = ids[:1, :16]
            n = args.decode_tokens

            def gen(k):
                with torch.inference_mode():
                    generate(model, prompt, k)
            gen(1), gen(n)
            t1 = bench.time(lambda: gen(1), warmup=0, repeats=3)
            tn = bench.time(lambda: gen(n), warmup=0, repeats=3)
            per_token = max(tn - t1, 1e-9) / (n - 1)
            bench.add("decode_tok_s", "minids", preset, 1 / per_token, "tokens/s", batch=1, new_tokens=n,
                      path="eager generate()", **info)
            del model
        bench.measure(f"{preset}: materialise in {dtype}, prefill {pb}x{pt}, batch-1 decode", run,
                      dict(metric="prefill_tok_s", impl="minids", model=preset, unit="tokens/s", **info))
        free_memory()


if __name__ == "__main__":
    main()
