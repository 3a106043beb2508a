"""MHA vs GQA vs MLA: what a cached token costs at decode time, and what each buys in held-out loss.

    python -m minids.experiments.attention_variants cuda --deadline-s 250   # one H100: 167 s for both parts
    python -m minids.experiments.attention_variants quick                             # a CPU, seconds (CI)

Two parts, each written to its own file as soon as it has something (atomically):

cost (attention_cost_<setting>.json). One attention layer of DeepSeek-V2-Lite's width (d_model 2048, 16 heads
of 128) decoding ONE new token per sequence against a cache of s positions, bf16, eager PyTorch: MHA (16 KV
heads), GQA 2:1 (8 KV heads), GQA 8:1 (2 KV heads, the 67B's ratio), and V2-Lite's MLA (d_c 512, d_h^R 64)
through its absorbed and its decompressed path. For contexts s of 1K-32K and batches of 1-64, the median time
of a step (10 repeats on the GPU) against its bytes floor: (the layer's weights + the cache it must read) / the measured
copy bandwidth. And how many 4K-token sequences fit in the device's memory beside the whole model's bf16
weights: V2-Lite (MLA) against the same model with each GQA/MHA attention instead.

quality (attention_variants_<setting>.json). Three models of the same non-embedding parameters (within 3%:
the FFN width d_ff of GQA and MLA is solved to match MHA's total), trained on the same tokens with the same
recipe (minids.train: AdamW 0.9/0.95, weight decay 0.1, clip 1.0, warm-up + multi-step schedule, bf16 autocast
on CUDA; the seed fixes both the initialisation and the batches, so every variant of a seed sees the same
tokens), 3 seeds each, on the project's Python corpus with the project's tokenizer (data/pretrain,
data/tokenizer; minids.experiments.miniature):

    mha   n_heads KV heads                      KV cache 2 x h x d_h numbers per token and layer
    gqa   n_heads / 4 KV heads                  2 x (h / 4) x d_h
    mla   d_c = 4 d_h, d_h^R = d_h / 2, V2's ratios (512 = 4 x 128, 64 = 128 / 2), no query latent (V2-Lite)

Rules, fixed here before any run (RULES, `verdict`):
    gate      every run's held-out bits per byte beats the byte n-gram's on held-out text (minids.ngram; the
              cuda setting reads the committed data/results/byte_ngram.json, scored on the whole validation split,
              which is the held-out text here too; the quick setting fits a small one on its own slice)
    metric    the final held-out bits per byte (the last evaluation, not the best)
    margin    2 x the larger of the two variants' seed standard deviations
    "MLA matches MHA"  mean(mla) <= mean(mha) + margin;  "MLA beats GQA"  mean(mla) < mean(gqa) - margin
    otherwise "not decided"; and no verdict at all unless the gate passed and all 3 seeds of each variant are done.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from dataclasses import asdict, dataclass, replace

import torch

from ..accounting import count_params, kv_cache_bytes, matmul_flops_per_token
from ..config import ModelConfig
from ..paths import PROJECT_ROOT, project_path
from ..results import write_json_atomic

VARIANTS = ("mha", "gqa", "mla")
RULES = {
    "gate": "every run's final held-out bits/byte < the byte n-gram's bits/byte on held-out text",
    "metric": "final held-out bits per byte (last evaluation)",
    "margin": "2 x max(seed std of the two variants compared)",
    "mla_matches_mha": "mean(mla) <= mean(mha) + margin",
    "mla_beats_gqa": "mean(mla) < mean(gqa) - margin",
    "else": "not decided; no verdict unless the gate passed and every variant has all its seeds",
    "param_match": "non-embedding parameters within 3% of MHA's (d_ff solved per variant)",
}


@dataclass(frozen=True)
class QualitySetting:
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int  # MHA's; GQA's and MLA's are solved to match its non-embedding parameters
    seq_len: int
    batch: int
    steps: int
    evals: int = 4  # held-out evaluations during a run (the last one is the metric)
    peak_lr: float = 2e-3
    warmup_fraction: float = 0.03
    seeds: tuple[int, ...] = (0, 1, 2)
    val_windows: int | None = None  # None: the whole validation split
    text_chars: int | None = None  # only the first characters of each split (quick)
    ngram_order: int | None = None  # fit a byte n-gram here (quick); None: read data/results/byte_ngram.json
    vocab_size: int = 8064


@dataclass(frozen=True)
class CostSetting:
    contexts: tuple[int, ...]
    batches: tuple[int, ...]
    d_model: int = 2048
    n_heads: int = 16
    repeats: int = 20


SETTINGS = {
    "cuda": (QualitySetting(d_model=256, n_layers=6, n_heads=8, d_ff=688, seq_len=256, batch=64, steps=500,
                            evals=2),
             CostSetting(contexts=(1024, 4096, 16384, 32768), batches=(1, 8, 64), repeats=10)),
    "quick": (QualitySetting(d_model=64, n_layers=2, n_heads=8, d_ff=64, seq_len=32, batch=8, steps=12, evals=2,
                             seeds=(0, 1, 2), val_windows=8, text_chars=40_000, ngram_order=3),
              CostSetting(contexts=(16, 64), batches=(1, 2), d_model=64, n_heads=8, repeats=2)),
}


# ---- the three shapes -------------------------------------------------------------------------------------
def variant_config(s: QualitySetting, variant: str, d_ff: int | None = None) -> ModelConfig:
    """The model of one variant (d_ff: the FFN width; default MHA's)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")
    d_h = s.d_model // s.n_heads
    base = ModelConfig(vocab_size=s.vocab_size, d_model=s.d_model, n_layers=s.n_layers, n_heads=s.n_heads,
                       n_kv_heads=s.n_heads, d_ff=d_ff or s.d_ff, max_seq_len=s.seq_len)
    if variant == "mha":
        return base
    if variant == "gqa":
        return base.replace(n_kv_heads=s.n_heads // 4)
    return base.replace(kv_lora_rank=4 * d_h, qk_nope_head_dim=d_h, qk_rope_head_dim=d_h // 2, v_head_dim=d_h)


def matched_config(s: QualitySetting, variant: str) -> ModelConfig:
    """The variant with the d_ff (a multiple of 8) whose non-embedding parameters come closest to MHA's."""
    target = count_params(variant_config(s, "mha")).non_embedding
    best = min(range(8, 4 * s.d_ff, 8),
               key=lambda f: abs(count_params(variant_config(s, variant, f)).non_embedding - target))
    cfg = variant_config(s, variant, best)
    gap = count_params(cfg).non_embedding / target - 1
    if abs(gap) > 0.03:
        raise ValueError(f"{variant}: no d_ff brings the non-embedding parameters within 3% of MHA's ({gap:+.1%})")
    return cfg


def verdict(runs: list[dict], ngram_bpb: float, seeds: tuple[int, ...]) -> dict:
    """The rules of the module docstring applied to the finished runs."""
    done = [r for r in runs if r.get("status") == "done"]
    by = {v: [r["final"]["val_bpb"] for r in done if r["variant"] == v] for v in VARIANTS}
    stats = {v: {"n": len(x), "mean": statistics.fmean(x) if x else None,
                 "std": statistics.stdev(x) if len(x) > 1 else None} for v, x in by.items()}
    gate = bool(done) and all(r["final"]["val_bpb"] < ngram_bpb for r in done)
    complete = all(stats[v]["n"] == len(seeds) for v in VARIANTS)
    out = {"stats": stats, "gate_passed": gate, "complete": complete, "ngram_bpb": ngram_bpb}
    if not (gate and complete):
        out["mla_vs_mha"] = out["mla_vs_gqa"] = "no verdict: " + ("gate failed" if not gate else "runs missing")
        return out
    m = stats["mla"]["mean"]
    for other, key in (("mha", "mla_vs_mha"), ("gqa", "mla_vs_gqa")):
        margin = 2 * max(stats["mla"]["std"], stats[other]["std"])
        diff = m - stats[other]["mean"]  # < 0: MLA better (fewer bits)
        out[f"margin_{other}"], out[f"diff_{other}"] = margin, diff
        if other == "mha":
            out[key] = "MLA matches MHA" if diff <= margin else "not decided"
        else:
            out[key] = "MLA beats GQA" if diff < -margin else "not decided"
    return out


# ---- quality ----------------------------------------------------------------------------------------------
def load_data(s: QualitySetting, device) -> dict:
    from .miniature import load_corpus

    return load_corpus(s.seq_len, s.val_windows, s.vocab_size, s.text_chars, device)


def ngram_baseline(s: QualitySetting, data: dict) -> dict:
    if s.ngram_order is None:
        import json

        with open(project_path("data", "results", "byte_ngram.json"), encoding="utf-8") as f:
            rec = json.load(f)
        return {"source": "data/results/byte_ngram.json (python -m minids.ngram), the whole validation split",
                "order": rec["best"]["order"], "val_bpb": rec["best"]["val_bpb"], "val_bytes": rec["val_bytes"]}
    from ..ngram import ByteNGram

    val = data["texts"]["val"].encode("utf-8")
    bpb = ByteNGram(s.ngram_order).fit(data["texts"]["train"].encode("utf-8")).bits_per_byte(val)
    return {"source": f"fitted here on the first {s.text_chars} characters", "order": s.ngram_order,
            "val_bpb": bpb, "val_bytes": len(val)}


def run_one(s: QualitySetting, variant: str, seed: int, data: dict, device) -> dict:
    from ..model import DeepSeekLM
    from ..train import TrainConfig, train
    from .depth_vs_width import binned
    from .miniature import held_out_loss, random_windows

    cfg = matched_config(s, variant)
    torch.manual_seed(seed)
    model = DeepSeekLM(cfg, device=device)
    tc = TrainConfig(steps=s.steps, batch_size=s.batch, seq_len=s.seq_len, peak_lr=s.peak_lr,
                     warmup_steps=max(1, int(s.warmup_fraction * s.steps)), eval_every=s.steps // s.evals,
                     seed=seed, device=str(device))
    history = train(model, random_windows(data["train"], s.batch, s.seq_len), tc,
                    eval_fn=lambda m: held_out_loss(m, data["windows"], data["nbytes"]), progress=False)
    p = count_params(cfg)
    steps_b, loss_b = binned(history["losses"], bins=50)
    return {"variant": variant, "seed": seed, "status": "done", "config": cfg.to_dict(),
            "attention": cfg.attention_kind, "d_ff": cfg.d_ff, "params_non_embedding": p.non_embedding,
            "params_attention": p.attention, "params_total": p.total,
            "kv_bytes_per_token_bf16": kv_cache_bytes(cfg, 1),
            "flops_per_token": matmul_flops_per_token(cfg, s.seq_len, training=True),
            "steps": s.steps, "tokens": history["tokens"], "train_seconds": history["train_seconds"],
            "tokens_per_s": history["tokens_per_s"], "curve": {"steps": steps_b, "loss": loss_b},
            "evals": history["evals"], "final": history["evals"][-1]}


def run_quality(name: str, device, out_path, deadline: float | None = None, log=print) -> dict:
    from .depth_vs_width import device_name

    s = SETTINGS[name][0]
    t0 = time.time()
    data = load_data(s, device)
    ngram = ngram_baseline(s, data)
    log(f"quality: {data['train_tokens']:,} train tokens, {data['windows'].numel():,} held-out tokens, "
        f"n-gram {ngram['val_bpb']:.4f} bits/byte ({time.time() - t0:.0f} s)")
    rec = {"record": "attention_variants", "setting_name": name, "setting": asdict(s), "rules": RULES,
           "command": f"python -m minids.experiments.attention_variants {name}", "device": str(device),
           "device_name": device_name(device), "torch": torch.__version__, "python": platform.python_version(),
           "date": time.strftime("%Y-%m-%d"), "ngram": ngram, "train_tokens": data["train_tokens"],
           "shapes": {v: {"d_ff": matched_config(s, v).d_ff, "attention": matched_config(s, v).attention_kind,
                          "params_non_embedding": count_params(matched_config(s, v)).non_embedding,
                          "kv_bytes_per_token_bf16": kv_cache_bytes(matched_config(s, v), 1)} for v in VARIANTS},
           "runs": []}
    longest = 0.0
    for seed in s.seeds:  # seed by seed, so that a deadline leaves whole seeds of every variant
        for variant in VARIANTS:
            if deadline is not None and time.time() + 1.2 * longest > deadline:
                rec["runs"].append({"variant": variant, "seed": seed, "status": "skipped: deadline"})
                continue
            tic = time.time()
            rec["runs"].append(run_one(s, variant, seed, data, device))
            longest = max(longest, time.time() - tic)
            r = rec["runs"][-1]
            log(f"  {variant} seed {seed}: {r['final']['val_bpb']:.4f} bits/byte, {r['tokens_per_s'] / 1e3:.0f}k "
                f"tokens/s, {time.time() - tic:.0f} s")
            rec["verdict"] = verdict(rec["runs"], ngram["val_bpb"], s.seeds)
            rec["total_seconds"] = time.time() - t0
            write_json_atomic(out_path, rec)
    rec["verdict"] = verdict(rec["runs"], ngram["val_bpb"], s.seeds)
    rec["total_seconds"] = time.time() - t0
    write_json_atomic(out_path, rec)
    return rec


# ---- cost -------------------------------------------------------------------------------------------------
def cost_configs(c: CostSetting, max_len: int) -> dict[str, ModelConfig]:
    """One layer of V2-Lite's width with each attention."""
    d_h = c.d_model // c.n_heads
    base = ModelConfig(vocab_size=256, d_model=c.d_model, n_layers=1, n_heads=c.n_heads, n_kv_heads=c.n_heads,
                       d_ff=8, max_seq_len=max_len)
    mla = base.replace(kv_lora_rank=4 * d_h, qk_nope_head_dim=d_h, qk_rope_head_dim=d_h // 2, v_head_dim=d_h,
                       rope_interleave=True)
    return {"MHA": base, "GQA 2:1": base.replace(n_kv_heads=c.n_heads // 2),
            "GQA 8:1": base.replace(n_kv_heads=c.n_heads // 8), "MLA absorbed": mla, "MLA decompressed": mla}


def time_decode_step(cfg: ModelConfig, path: str | None, batch: int, context: int, device, repeats: int) -> float:
    """Median seconds of one attention layer's step: one new token per sequence, `context` cached positions."""
    from ..attention import GroupedQueryAttention
    from ..kv_cache import KVCache
    from ..latent_cache import LatentKVCache
    from ..mla import MultiHeadLatentAttention
    from ..results import median_time
    from ..rope import RotaryEmbedding
    from ..yarn import YarnRotaryEmbedding

    dt = torch.bfloat16
    if cfg.is_mla:
        attn = MultiHeadLatentAttention(cfg, device=device, dtype=dt)
        attn.path = path
        cache = LatentKVCache(cfg, batch, context + 1, device=device, dtype=dt)
        rope = YarnRotaryEmbedding(cfg.rope_dim, cfg.rope_theta, cfg.max_seq_len, None)
    else:
        attn = GroupedQueryAttention(cfg, device=device, dtype=dt)
        cache = KVCache(cfg, batch, context + 1, device=device, dtype=dt)
        rope = RotaryEmbedding(cfg.head_dim, cfg.rope_theta, cfg.max_seq_len)
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.02)
    cache.length = context
    with torch.no_grad():  # random contents, never zeros (zeros can run faster than real data)
        for t in (cache.latents + cache.rope_keys if cfg.is_mla else cache.keys + cache.values):
            t.normal_()
    x = torch.randn(batch, 1, cfg.d_model, device=device, dtype=dt)
    cos, sin = rope(torch.tensor([context], device=device))
    with torch.inference_mode():
        return median_time(lambda: attn(x, cos, sin, cache), device=device, warmup=3, repeats=repeats)


def layer_bytes(cfg: ModelConfig, batch: int, context: int) -> int:
    """What a decode step must read at least: the layer's bf16 attention weights and its whole cache."""
    from ..accounting import attention_params_per_layer

    return 2 * attention_params_per_layer(cfg) + kv_cache_bytes(cfg, context, batch)


def sequences_that_fit(memory_bytes: int, seq_len: int = 4096) -> list[dict]:
    """4K-token sequences whose bf16 cache fits beside the whole model's bf16 weights: V2-Lite (MLA) against the
    same model with MHA, GQA 2:1 or GQA 8:1 attention (head_dim 128)."""
    lite = ModelConfig.preset("deepseek-v2-lite")
    gqa = lite.replace(kv_lora_rank=None, q_lora_rank=None, qk_nope_head_dim=None, qk_rope_head_dim=None,
                       v_head_dim=None, rope_interleave=False, rope_scaling=None, topk_method="greedy",
                       n_group=None, topk_group=None)
    out = []
    for name, cfg in (("V2-Lite (MLA)", lite), ("MHA variant", gqa), ("GQA 2:1 variant", gqa.replace(n_kv_heads=8)),
                      ("GQA 8:1 variant", gqa.replace(n_kv_heads=2))):
        weights, per_seq = 2 * count_params(cfg).total, kv_cache_bytes(cfg, seq_len)
        out.append({"model": name, "weights_bytes": weights, "cache_bytes_per_sequence": per_seq,
                    "kv_bytes_per_token": kv_cache_bytes(cfg, 1), "memory_bytes": memory_bytes,
                    "sequences": max(0, (memory_bytes - weights) // per_seq)})
    return out


def run_cost(name: str, device, out_path, log=print) -> dict:
    from ..mfu import measure_copy_bandwidth
    from .depth_vs_width import device_name

    c = SETTINGS[name][1]
    device = torch.device(device)
    bandwidth = measure_copy_bandwidth(device)
    memory = (torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else 80 * 2**30)
    configs = cost_configs(c, max(c.contexts) + 1)
    rec = {"record": "attention_cost", "setting_name": name, "setting": asdict(c),
           "command": f"python -m minids.experiments.attention_variants {name}", "device": str(device),
           "device_name": device_name(device), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
           "copy_bandwidth_bytes_per_s": bandwidth, "dtype": "bfloat16", "mode": "eager, torch.inference_mode",
           "fit_4k": sequences_that_fit(memory), "fit_memory_note": "device total memory" if device.type == "cuda"
           else "80 GiB assumed (no GPU)", "points": []}
    for variant, cfg in configs.items():
        path = {"MLA absorbed": "absorbed", "MLA decompressed": "decompressed"}.get(variant)
        for batch in c.batches:
            for context in c.contexts:
                point = {"variant": variant, "batch": batch, "context": context,
                         "bytes_floor": layer_bytes(cfg, batch, context),
                         "kv_bytes_per_token": kv_cache_bytes(cfg, 1)}
                point["floor_s"] = point["bytes_floor"] / bandwidth
                try:
                    point["seconds"] = time_decode_step(cfg, path, batch, context, device, c.repeats)
                except torch.cuda.OutOfMemoryError:
                    point["seconds"] = None
                    point["status"] = "out of memory"
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                rec["points"].append(point)
        done = [p for p in rec["points"] if p["variant"] == variant and p["seconds"]]
        log(f"cost: {variant}: " + ", ".join(f"b{p['batch']} s{p['context']} {1e6 * p['seconds']:.0f} us"
                                             for p in done[-3:]))
        write_json_atomic(out_path, rec)
    return rec


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("setting", choices=sorted(SETTINGS))
    p.add_argument("--device", default=None, help="default: cuda for the cuda setting, else cpu")
    p.add_argument("--parts", default="cost,quality", help="comma-separated: cost, quality")
    p.add_argument("--results-dir", default=str(PROJECT_ROOT / "data" / "results"))
    p.add_argument("--deadline-s", type=float, default=None, help="start no quality run that would end after this")
    args = p.parse_args(argv)
    device = args.device or ("cuda" if args.setting == "cuda" else "cpu")
    deadline = time.time() + args.deadline_s if args.deadline_s else None
    parts = args.parts.split(",")
    unknown = set(parts) - {"cost", "quality"}
    if unknown:
        p.error(f"unknown parts {sorted(unknown)}; choose from cost, quality")
    if "cost" in parts:
        run_cost(args.setting, device, f"{args.results_dir}/attention_cost_{args.setting}.json", log=_log)
    if "quality" in parts:
        rec = run_quality(args.setting, device, f"{args.results_dir}/attention_variants_{args.setting}.json",
                          deadline, log=_log)
        v = rec["verdict"]
        _log(f"verdict: {v['mla_vs_mha']}; {v['mla_vs_gqa']} (gate passed: {v['gate_passed']})")


def _log(msg: str) -> None:
    print(msg, flush=True)


if __name__ == "__main__":
    main()
