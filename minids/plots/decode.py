"""Batched decode as a share of its bandwidth floor, before and after split-KV decode attention.

Reads the records of benchmarks/results/batched_decode_gpu.json (benchmarks/bench_batched_decode.py): for each
(model, KV heads, context, batch) the metric decode_frac_of_bandwidth_floor, i.e. the time a step must take to
read the weights once and every row's KV cache (weights + B x cache bytes over the bandwidth) divided by the
measured step time. Each record names its decode-attention kernel: "before" is the best, per point, of the
kernels that do not split the cache (sdpa, einsum: one thread block per row and KV head), "after" the best of
the split-KV kernels (flex, triton). Pass the records of one card (the file of one run, or filtered by device).
"""

from __future__ import annotations

METRIC = "decode_frac_of_bandwidth_floor"
CONTEXT_STYLE = {2048: "o-", 4096: "s--"}
BEFORE = ("sdpa", "einsum")  # no split of the cache
AFTER = ("flex", "triton")  # split-KV


def kernel_label(record: dict) -> str:
    """A record's decode-attention kernel, "+compiled" when the code between attentions ran through Inductor."""
    return record.get("decode_attention", "?") + ("+compiled" if record.get("compile_layers") else "")


def floor_fractions(records: list[dict], kernels: tuple | None, impl: str = "minids") -> dict[tuple, dict[int, tuple]]:
    """{(model, kv_heads, context): {batch: (fraction, kernel)}} for `impl`'s records whose decode_attention is
    one of `kernels` (None: any): per point the best kernel, each kernel at its latest measurement (a file that
    holds two runs counts the later one, not the luckier one)."""
    latest: dict[tuple, float] = {}  # (model, kv_heads, context, batch, kernel) -> fraction; later records win
    for r in records:
        if r.get("metric") != METRIC or r.get("impl") != impl or r.get("value") is None:
            continue
        if kernels is not None and r.get("decode_attention") not in kernels:
            continue
        kernel = kernel_label(r)
        if r.get("path") and impl != "minids":
            kernel = r["path"]
        latest[(r["model"], r["kv_heads"], r["context"], r["batch"], kernel)] = r["value"]
    out: dict[tuple, dict[int, tuple]] = {}
    for (model, kv, context, batch, kernel), value in latest.items():
        best = out.setdefault((model, kv, context), {}).get(batch)
        if best is None or value > best[0]:
            out[(model, kv, context)][batch] = (value, kernel)
    return {k: dict(sorted(v.items())) for k, v in out.items()}


def _label(model: str, kv_heads: int) -> str:
    size = "67B" if "67b" in model else "7B"
    kind = "MHA" if (size == "7B" and kv_heads == 32) else f"GQA, {kv_heads} KV heads" if kv_heads > 1 else "MQA"
    return f"{size} ({kind})" if size == "7B" else f"67B (GQA, {kv_heads} KV heads)"


def decode_floor_figure(records: list[dict], goals: tuple[float, float] = (0.75, 0.80)):
    """One panel per (model, KV heads): % of the weights+KV floor against batch, before (gray: no split) and
    after (blue: split-KV), one line per context (2K solid, 4K dashed), transformers' best path where measured,
    and the goal lines (batch 1-4 and batch >= 8). Returns the Figure."""
    import matplotlib.pyplot as plt

    old, new = floor_fractions(records, BEFORE), floor_fractions(records, AFTER)
    if not old and not new:
        raise ValueError(f"decode_floor_figure: no minids {METRIC} records in the {len(records)} given")
    hf = floor_fractions(records, None, "transformers")
    devices = sorted({r.get("device", "?") for r in records if r.get("metric") == METRIC})
    panels = sorted({(m, kv) for m, kv, _ in list(old) + list(new)}, key=lambda p: ("67b" in p[0], -p[1]))
    cols = min(len(panels), 2)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.0 * rows + 0.9), sharey=True, squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.remove()
    for ax, (model, kv) in zip(axes.flat, panels):
        for context, style in CONTEXT_STYLE.items():
            key = (model, kv, context)
            for data, when, color in ((old, "before (sdpa / einsum)", "gray"), (new, "after (split-KV)", "tab:blue")):
                if key in data:
                    pts = data[key]
                    ax.plot(list(pts), [100 * f for f, _ in pts.values()], style, color=color, ms=4,
                            label=f"{when}, T={context // 1024}K")
            if key in hf:
                pts = hf[key]
                ax.plot(list(pts), [100 * f for f, _ in pts.values()], "x:", color="black", ms=6,
                        label=f"transformers (best path), T={context // 1024}K")
        low, high = goals
        ax.hlines(100 * low, 1, 4, color="tab:red", ls=":", lw=1.2, label=f"goal {low:.0%} (B 1-4)")
        ax.hlines(100 * high, 8, 128, color="tab:red", ls="-.", lw=1.2, label=f"goal {high:.0%} (B >= 8)")
        ax.set(xscale="log", xlabel="batch B (sequences)", ylabel="% of the weights + KV floor",
               title=_label(model, kv), ylim=(0, 105))
        ax.set_xticks([1, 2, 4, 8, 16, 32, 64, 128], labels=["1", "2", "4", "8", "16", "32", "64", "128"])
        ax.tick_params(labelsize=8)
    handles = {}  # one legend for the figure: every label once, in the order first drawn
    for ax in axes.flat[:len(panels)]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.suptitle(f"decode step against its floor, (weights + B x KV cache bytes) / bandwidth; {', '.join(devices)}",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.9 / (3.0 * rows + 0.9), 1, 1))
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=4, fontsize=8, frameon=False)
    return fig


def goal_of(batch: int, goals: tuple[float, float] = (0.75, 0.80)) -> float:
    """The share of the floor a point is held to: goals[0] at batch 1-4, goals[1] from batch 8 on."""
    return goals[0] if batch < 8 else goals[1]


def goal_rows(records: list[dict], goals: tuple[float, float] = (0.75, 0.80)) -> list[dict]:
    """Every split-KV point (its latest measurement, best kernel) beside its goal: one dict per (model, KV
    heads, context, batch) with keys model, kv_heads, context, batch, fraction, kernel, goal, met."""
    rows = []
    for (model, kv, context), points in floor_fractions(records, AFTER).items():
        for batch, (fraction, kernel) in points.items():
            goal = goal_of(batch, goals)
            rows.append(dict(model=model, kv_heads=kv, context=context, batch=batch, fraction=fraction,
                             kernel=kernel, goal=goal, met=fraction >= goal))
    return sorted(rows, key=lambda r: ("67b" in r["model"], -r["kv_heads"], r["context"], r["batch"]))


def step_profiles(records: list[dict]) -> dict[tuple, dict[str, float]]:
    """{(model, kv_heads, kernel): {part: microseconds per step}} from the profile_us_per_step records (where
    the GPU time of the profiled step goes: attention, matmul, elementwise/other, gaps); later runs win."""
    out: dict[tuple, dict[str, float]] = {}
    for r in records:
        if r.get("metric") == "profile_us_per_step" and r.get("value") is not None:
            kernel = kernel_label(r)
            out.setdefault((r["model"], r["kv_heads"], kernel), {})[r["part"]] = r["value"]
    return out
