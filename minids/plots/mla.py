"""Chapter 14's figures: what a cached token costs (bytes per token, decode time) and what MLA buys (held-out
bits per byte against KV bytes per token), from minids.experiments.attention_variants' files."""

from __future__ import annotations

import statistics

import matplotlib.pyplot as plt

COLORS = {"MHA": "C0", "GQA 2:1": "C1", "GQA 8:1": "C2", "MLA absorbed": "C3", "MLA decompressed": "C4",
          "mha": "C0", "gqa": "C5", "mla": "C3"}


def plot_cache_per_token(rows: dict[str, int]):
    """Horizontal bars: KV-cache KiB per token (bf16, all layers) of each model in `rows` (name -> bytes)."""
    fig, ax = plt.subplots(figsize=(8, 2.8), layout="constrained")
    names = list(rows)
    ax.barh(names, [rows[n] / 1024 for n in names], color=[f"C{i}" for i in range(len(names))])
    for i, n in enumerate(names):
        ax.text(rows[n] / 1024, i, f" {rows[n] / 1024:,.1f} KiB", va="center", fontsize=9)
    ax.set_xlabel("KV cache per token, all layers, bf16 (KiB)")
    ax.set_xlim(0, 1.25 * max(rows.values()) / 1024)
    ax.invert_yaxis()
    return fig


def plot_decode_and_quality(cost: dict, quality: dict, batch: int = 64):
    """Left: one layer's decode step time against the context at `batch`, measured (solid) and its bytes floor
    (dotted), per attention. Right: final held-out bits per byte of every run against its KV bytes per token,
    seed means as large markers."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4), layout="constrained")
    variants = list(dict.fromkeys(p["variant"] for p in cost["points"]))
    for v in variants:
        pts = sorted((p["context"], p["seconds"], p["floor_s"]) for p in cost["points"]
                     if p["variant"] == v and p["batch"] == batch and p["seconds"])
        if not pts:
            continue
        ctx = [p[0] for p in pts]
        left.plot(ctx, [1e6 * p[1] for p in pts], "o-", color=COLORS.get(v), label=f"{v}, measured")
        if v != "MLA decompressed":  # the same bytes as absorbed: one floor line for both
            left.plot(ctx, [1e6 * p[2] for p in pts], ":", color=COLORS.get(v), label=f"{v}, bytes floor")
    left.set(xscale="log", yscale="log", xlabel="context s (cached tokens)", ylabel="decode step, one layer (µs)",
             title=f"batch {batch}, bf16, {cost['device_name']}")
    left.legend(fontsize=8, ncol=2)
    runs = [r for r in quality["runs"] if r.get("status") == "done"]
    for v in dict.fromkeys(r["variant"] for r in runs):
        rs = [r for r in runs if r["variant"] == v]
        x = rs[0]["kv_bytes_per_token_bf16"]
        right.plot([x] * len(rs), [r["final"]["val_bpb"] for r in rs], "o", color=COLORS.get(v), alpha=0.4)
        right.plot([x], [statistics.fmean(r["final"]["val_bpb"] for r in rs)], "D", ms=9, color=COLORS.get(v),
                   label=f"{rs[0]['attention']}, mean of {len(rs)} seeds")
    right.set(xscale="log", xlabel="KV cache per token, all layers, bf16 (bytes)",
              ylabel="held-out bits per byte (lower is better)", title="same parameters, tokens and recipe")
    right.legend(fontsize=8)
    return fig
