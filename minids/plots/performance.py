"""Chapter 10's figure: MFU on one H200, minids beside transformers on the same weights, from the committed
benchmark records (benchmarks/results/prefill.json, train.json, h200_67b.json)."""

from __future__ import annotations

# (file stem, MFU metric, how the workload is named on the figure)
WORKLOADS = (("prefill", "prefill_mfu", "7B prefill"), ("h200_67b", "prefill_mfu", "67B prefill"),
             ("train", "train_mfu", "1.6B training step"))
COLORS = {"minids": "tab:blue", "transformers": "tab:orange"}


def mfu_rows(records_by_file: dict[str, list[dict]]) -> list[dict]:
    """One row per measured (workload, shape, implementation, variant): {"workload", "impl", "how", "mfu"},
    grouped by workload and shape, and sorted by MFU within a group (highest first)."""
    rows = []
    for stem, metric, name in WORKLOADS:
        for r in records_by_file.get(stem, []):
            if r.get("metric") != metric or r.get("value") is None:
                continue
            how = r.get("variant", "")
            if r.get("sdpa_backend", "default") != "default":
                how += f", {r['sdpa_backend']} attention"
            rows.append({"workload": f"{name}, {r['batch']}×{r['seq_len']} tokens", "impl": r["impl"], "how": how,
                         "mfu": r["value"]})
    order = list(dict.fromkeys(r["workload"] for r in rows))
    return sorted(rows, key=lambda r: (order.index(r["workload"]), -r["mfu"]))


def mfu_bars(records_by_file: dict[str, list[dict]], peak_flops: float = 790e12):
    """Horizontal bars, one per row of mfu_rows, grouped under their workload; coloured by implementation."""
    import matplotlib.pyplot as plt

    rows = mfu_rows(records_by_file)
    fig, ax = plt.subplots(figsize=(10, 0.36 * len(rows) + 1.8))
    y, ticks, labels, group_y = 0.0, [], [], []
    last = None
    for r in rows:
        if r["workload"] != last:
            if last is not None:
                y += 0.6
            group_y.append((y, r["workload"]))
            last = r["workload"]
        ax.barh(y, 100 * r["mfu"], color=COLORS.get(r["impl"], "gray"), height=0.8)
        ax.text(100 * r["mfu"] + 0.8, y, f"{100 * r['mfu']:.1f}%", va="center", fontsize=8)
        ticks.append(y)
        labels.append(f"{r['workload']} · {r['impl']} {r['how']}")
        y += 1
    ax.set_yticks(ticks, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel(f"MFU, % of {peak_flops / 1e12:.0f} TFLOP/s (every matrix product, causal attention halved)")
    ax.set_title("One H200, bf16, same weights: minids beside transformers", fontsize=10)
    for impl, color in COLORS.items():
        ax.barh([], [], color=color, label=impl)
    ax.legend(fontsize=9, loc="lower right")
    fig.tight_layout()
    return fig
